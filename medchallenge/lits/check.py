"""``lits check --data DIR``: the layout, headers and label values of a LiTS folder, before ``tile``.

CT volumes are never decoded: their headers (size, spacing, direction, voxel type) come from
SimpleITK's ``ReadImageInformation``. Segmentations are read, because their label values are
what is checked (uint8, a fraction of a CT's size). The decisions are the pipeline's own:
:func:`~medchallenge.lits.data.find_cases` (names, pairing, duplicates),
:func:`~medchallenge.lits.data.check_ct_dtype` (signed HU),
:func:`~medchallenge.lits.data.check_segmentation_grid` and
:func:`~medchallenge.lits.data.check_label_map` (labels {0, 1, 2}), and
:func:`medchallenge.core.nifti.check_complete` (truncated files).

A problem that ``tile`` stops on (a training volume with its segmentation) is blocking (exit 2).
Problems of test volumes stop only ``predict``, and volumes without a segmentation or
segmentations without a volume are skipped by ``tile``: those are warnings.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import VolumeHeader, read_volume, read_volume_header
from medchallenge.lits.data import (
    LitsCase,
    check_ct_dtype,
    check_label_map,
    check_segmentation_grid,
    find_cases,
    find_segmentations,
)

Header = VolumeHeader
read_header = read_volume_header


def _volume_stats(header: Header) -> dict[str, Any]:
    """Slices, in-plane size and spacing along the volume's own axial axis (read from its direction)."""
    axial = 2 - header.geometry.axial_axis  # ITK index of the axial axis
    plane = [i for i in range(3) if i != axial]
    size, spacing = header.geometry.size, header.geometry.spacing
    # spacings are stored as float32 in NIfTI: 0.8 reads 0.800000011920929, shown as 0.8
    return {"slices": size[axial], "plane": [size[i] for i in plane], "slice_mm": round(spacing[axial], 4),
            "plane_mm": [round(spacing[i], 4) for i in plane], "dtype": str(header.dtype)}


def check_case(case: LitsCase) -> dict[str, Any]:
    """One case's header statistics and problems (``problems``: [path, problem] pairs; no exception)."""
    stats: dict[str, Any] = {"problems": []}
    try:
        header = read_header(case.volume)
        stats.update(_volume_stats(header))
        check_ct_dtype(header.dtype, case.volume)
    except DataError as err:
        stats["problems"].append([str(err.path), err.problem])
        return stats
    if case.segmentation is None:
        return stats
    try:
        read_header(case.segmentation)
        check_segmentation_grid(case.segmentation, case.volume, header.geometry)
        labels = check_label_map(read_volume(case.segmentation).array, case.segmentation)
    except DataError as err:
        stats["problems"].append([str(err.path), err.problem])
        return stats
    counts = np.bincount(labels.ravel(), minlength=3)
    stats["liver"], stats["tumour"] = int(counts[1] + counts[2]), int(counts[2])
    return stats


def check_lits(data: Path, workers: int = 0) -> CheckReport:
    """Check every case under ``data``; problems carry their file and whether ``tile`` stops on them."""
    report = CheckReport("lits", Path(data))
    try:
        cases = find_cases(data)
    except DataError as err:
        report.add(err.path, err.problem)
        return report
    _orphan_segmentations(data, cases, report)
    results = check_each(cases, check_case, report, lambda c: c.volume, workers)
    stats = [(case, r) for case, r in zip(cases, results) if r is not None]
    for case, result in stats:
        trains = case.segmentation is not None  # tile reads exactly these cases
        for path, problem in result["problems"]:
            report.add(path, problem if trains else f"{problem} (predict would stop on it)", blocking=trains)
        if not case.test and case.segmentation is None:
            report.add(case.volume, f"no segmentation-{case.number}.nii: tile skips this volume", blocking=False)
        if trains and result.get("liver") == 0:
            report.add(case.segmentation, "no liver or tumour voxel (labels all 0)", blocking=False)
    if not any(c.segmentation is not None for c in cases):
        report.add(data, "no volume-N.nii with a segmentation-N.nii to train on")
    _summarise(report, cases, [r for _, r in stats])
    return report


def _orphan_segmentations(data: Path, cases: list[LitsCase], report: CheckReport) -> None:
    """Segmentations without their volume (tile never sees them): warnings."""
    paired = {c.segmentation for c in cases if c.segmentation is not None}
    try:
        found = find_segmentations(data)
    except DataError as err:
        report.add(err.path, err.problem)
        return
    for name, path in found.items():
        if path not in paired:
            volume = name.replace("segmentation", "volume")
            report.add(path, f"no {volume}.nii beside it: not used" if not name.startswith("test-")
                       else "a test segmentation in the data folder: keep answers apart", blocking=False)


def _summarise(report: CheckReport, cases: list[LitsCase], results: list[dict[str, Any]]) -> None:
    """Counts per split and the ranges of sizes, spacings and label volumes."""
    report.counts["training volumes"] = sum(not c.test for c in cases)
    report.counts["test volumes"] = sum(c.test for c in cases)
    report.counts["with segmentation"] = sum(c.segmentation is not None for c in cases)
    labelled = [r for r in results if "liver" in r]
    report.counts["with tumour"] = sum(r["tumour"] > 0 for r in labelled)
    for dtype, n in sorted(Counter(r["dtype"] for r in results if "dtype" in r).items()):
        report.counts[f"CT stored as {dtype}"] = n
    headed = [r for r in results if "slices" in r]
    report.ranges["slices"] = value_range(r["slices"] for r in headed)
    report.ranges["in-plane size (px)"] = value_range(v for r in headed for v in r["plane"])
    report.ranges["slice spacing (mm)"] = value_range(r["slice_mm"] for r in headed)
    report.ranges["in-plane spacing (mm)"] = value_range(v for r in headed for v in r["plane_mm"])
    report.ranges["liver + tumour voxels"] = value_range(r["liver"] for r in labelled)
    report.ranges["tumour voxels"] = value_range(r["tumour"] for r in labelled)
