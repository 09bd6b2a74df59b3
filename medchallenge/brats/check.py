"""``brats check --data DIR``: the layout, headers and labels of a BraTS dataset, before ``tile``.

The pipeline's own readers decide (:func:`medchallenge.brats.data.case_in` for the 2021/2023
layouts and missing modalities, :func:`~medchallenge.brats.data.check_grid` for grid agreement,
:func:`~medchallenge.brats.data.read_labels` for the label set of the file's convention,
:func:`medchallenge.core.nifti.check_complete` for truncated files). Images are read by header
only; only the segmentations (uint8, small) are decoded, for their label values.

Blocking (``tile`` stops): a case mixing the namings or lacking a modality, a case name that is not
a plain name, a truncated or unreadable file, a grid differing from the case's FLAIR (t2f), labels
outside the convention, a dataset of both conventions, no labelled case. Warnings (``tile`` goes
on): a size other than 240×240×155, a spacing other than 1 mm, a segmentation stored as floats,
a folder without any modality file (ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.brats.data import CONVENTIONS, case_in, check_grid, read_labels
from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import Geometry, check_complete, read_geometry

STANDARD_SIZE = (240, 240, 155)  # every released BraTS volume: 1 mm isotropic, skull-stripped, co-registered
STANDARD_SPACING = (1.0, 1.0, 1.0)


def read_header(path: Path) -> tuple[Geometry, str]:
    """(geometry, voxel type such as "32-bit float") from the header only; a truncated file is an error."""
    import SimpleITK as sitk

    check_complete(path)
    geometry = read_geometry(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return geometry, sitk.GetPixelIDValueAsString(reader.GetPixelID())


def check_case(folder: Path) -> dict[str, Any]:
    """One case folder → its facts and problems (each ``(path, problem, blocking)``).

    Raises:
        DataError: the folder is not a usable case (mixed namings, a missing modality, a bad name).
    """
    case = case_in(folder)
    if case is None:
        return {"name": folder.name, "case": False,
                "problems": [(str(folder), "no BraTS modality file: not a case folder (ignored)", False)]}
    problems: list[tuple[str, str, bool]] = []
    headers: dict[Path, tuple[Geometry, str]] = {}
    files = [*case.images, *([case.segmentation] if case.segmentation is not None else [])]
    for path in files:
        try:
            headers[path] = read_header(path)
        except DataError as err:
            problems.append((str(path), err.problem, True))
    facts: dict[str, Any] = {"name": case.name, "case": True, "convention": case.convention,
                             "labelled": case.segmentation is not None, "types": [t for _, t in headers.values()]}
    reference = case.images[0]
    if reference in headers:
        geometry = headers[reference][0]
        problems += _grid_problems(reference, geometry, headers)
        facts.update(size=geometry.size, spacing=geometry.spacing)
    seg = case.segmentation
    if seg is not None and seg in headers:
        if "float" in headers[seg][1]:
            problems.append((str(seg), f"segmentation stored as {headers[seg][1]} (labels are read as integers)", False))
        try:
            values, counts = np.unique(read_labels(seg, case.convention), return_counts=True)
            facts["labels"] = {int(v): int(c) for v, c in zip(values, counts)}
        except DataError as err:
            problems.append((str(seg), err.problem, True))
    facts["problems"] = problems
    return facts


def _grid_problems(reference: Path, geometry: Geometry, headers: dict[Path, tuple[Geometry, str]]
                   ) -> list[tuple[str, str, bool]]:
    """Grids that differ from the FLAIR's (blocking), 3-D and the standard BraTS grid (warnings)."""
    problems: list[tuple[str, str, bool]] = []
    if len(geometry.size) != 3:
        problems.append((str(reference), f"{len(geometry.size)}-D image: expected a 3-D volume", True))
    for path, (other, _) in headers.items():
        try:
            check_grid(path, other, reference, geometry)
        except DataError as err:
            problems.append((str(path), err.problem, True))
    if geometry.size != STANDARD_SIZE:
        shown = "×".join(str(s) for s in geometry.size)
        problems.append((str(reference), f"size {shown}, not the BraTS 240×240×155 (cropped or resampled?)", False))
    if not np.allclose(geometry.spacing, STANDARD_SPACING, atol=1e-3):
        shown = "×".join(f"{s:g}" for s in geometry.spacing)
        problems.append((str(reference), f"spacing {shown} mm, not the BraTS 1 mm isotropic", False))
    return problems


def check_brats(data: Path, workers: int = 0) -> CheckReport:
    """Check every case folder under ``data`` (in ``workers`` processes) into a :class:`CheckReport`."""
    data = Path(data)
    report = CheckReport("brats", data)
    if not data.is_dir():
        report.add(data, "dataset folder not found")
        return report
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    results = check_each(folders, check_case, report, path_of=lambda folder: folder, workers=workers)
    cases = [r for r in results if r is not None and r["case"]]
    for result in results:
        for path, problem, blocking in (result or {}).get("problems", []):
            report.add(path, problem, blocking)
    _summarise(report, cases, data)
    return report


def _summarise(report: CheckReport, cases: list[dict[str, Any]], data: Path) -> None:
    """Counts, ranges and the dataset-wide problems (both conventions, nothing to train on)."""
    labelled = [c for c in cases if c["labelled"]]
    report.counts = {"cases": len(cases), "train (with segmentation)": len(labelled),
                     "test (no segmentation)": len(cases) - len(labelled)}
    for name in CONVENTIONS:
        report.counts[f"{name} naming"] = sum(c["convention"] == name for c in cases)
    for region in ("wt", "tc", "et"):
        report.counts[f"cases with {region.upper()}"] = sum(_has_region(c, region) for c in labelled)
    for kind in sorted({t for c in cases for t in c["types"]}):
        report.counts[f"files of {kind}"] = sum(c["types"].count(kind) for c in cases)
    for key, unit in (("size", ""), ("spacing", " (mm)")):
        for axis, label in enumerate("xyz"):
            report.ranges[f"{key} {label}{unit}"] = value_range(
                c[key][axis] for c in cases if len(c.get(key, ())) > axis)
    report.ranges["label values"] = value_range(v for c in labelled for v in c.get("labels", {}))
    conventions = sorted({c["convention"] for c in cases})
    if len(conventions) > 1:
        example = {c["convention"]: c["name"] for c in cases}
        report.add(data, f"cases in both the 2021 and the 2023 naming (e.g. {example['brats2021']} and"
                         f" {example['brats2023']}): tile refuses a mixed dataset")
    if not cases:
        report.add(data, "no BraTS case folders (<case>/<case>_flair.nii.gz ... or <case>/<case>-t2f.nii.gz ...)")
    elif not labelled:
        report.add(data, "no case with a <case>_seg.nii[.gz] (or <case>-seg.nii.gz) to train on")


def _has_region(case: dict[str, Any], region: str) -> bool:
    labels = CONVENTIONS[case["convention"]].regions[region]
    return any(case.get("labels", {}).get(v, 0) > 0 for v in labels)
