"""``kits check --data DIR``: the layout, headers and labels of a KiTS19 dataset, before ``tile``.

The pipeline's own readers decide: :func:`medchallenge.kits.data.case_of_folder` (``case_XXXXX``
names, ``imaging.nii.gz`` present), :func:`medchallenge.core.nifti.check_complete` (truncated
files), :func:`~medchallenge.kits.data.check_same_grid` (segmentation on the imaging's grid),
:func:`~medchallenge.kits.data.check_labels` (labels in {0, 1, 2}) and
:func:`~medchallenge.kits.data.count_nan_voxels` (NaN in floating-point imaging, which SimpleITK
reads as 0). Imaging is read by header only (SimpleITK ``ReadImageInformation``); segmentations
are decoded (uint8, small) for their label values; floating-point imaging is streamed once for NaN.

Blocking (``tile`` stops): a misnamed ``case_…`` folder, a case folder without ``imaging.nii.gz``,
no case at all, and in a case with a segmentation: a truncated or unreadable file, an image that is
not 3-D, NaN voxels, a segmentation on another grid, labels outside {0, 1, 2}. Warnings (``tile``
goes on): the same imaging problems in a test case (no segmentation: ``tile`` skips it, ``predict``
would stop), oblique slices, loose files named like cases, and problems of ``kits.json`` (which
the pipeline does not read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import Geometry, read_volume, read_volume_header
from medchallenge.kits.data import (
    case_of_folder,
    check_case_name,
    check_labels,
    check_same_grid,
    count_nan_voxels,
    data_root,
    looks_like_case,
)

OBLIQUE = 0.99  # |cos| between the slice axis and world z below which slices are not axial
TEST_NOTE = " (a test case: tile skips it, predict would stop)"


@dataclass(frozen=True)
class Header:
    """What a 3-D NIfTI header says: the geometry and the voxel type (e.g. "int16"), with KiTS's axial views."""

    geometry: Geometry
    dtype: str
    floating: bool

    @property
    def slices(self) -> int:
        """Axial slices (the size along the axis closest to world z)."""
        return self.geometry.size[2 - self.geometry.axial_axis]

    @property
    def in_plane(self) -> tuple[int, int]:
        """(rows, cols) of an axial slice in px, as ``Volume.axial_first`` gives them."""
        shape = list(reversed(self.geometry.size))  # numpy order
        shape.pop(self.geometry.axial_axis)
        return shape[0], shape[1]

    @property
    def thickness(self) -> float:
        """Spacing between axial slices (mm)."""
        return self.geometry.spacing[2 - self.geometry.axial_axis]

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """In-plane spacings (mm)."""
        kept = [s for i, s in enumerate(self.geometry.spacing) if i != 2 - self.geometry.axial_axis]
        return kept[0], kept[1]


def read_header(path: Path) -> Header:
    """The header of a NIfTI file, voxels unread; a DataError for truncated, unreadable or non-3-D files.

    The messages are those of ``core.nifti`` (``read_volume``), which ``tile`` meets on the same file.
    """
    header = read_volume_header(path)
    return Header(header.geometry, header.dtype.name, header.floating)


@dataclass
class CaseFacts:
    """One case folder's facts (headers, label voxel counts) and problems (path, problem, blocking)."""

    name: str
    labelled: bool = False
    imaging: Header | None = None
    labels: Header | None = None
    voxels: list[int] | None = None  # label 0, 1, 2 voxel counts
    problems: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def header(self) -> Header | None:
        """The header the ranges come from: the imaging's, else the segmentation's."""
        return self.imaging or self.labels


def check_case(folder: Path) -> CaseFacts:
    """Check one ``case_XXXXX`` folder the way ``tile`` (``read_case``) would read it, collecting every problem."""
    seg = folder / "segmentation.nii.gz"
    facts = CaseFacts(folder.name, labelled=seg.is_file())
    blocking = facts.labelled  # tile reads only the cases with a segmentation
    note = "" if blocking else TEST_NOTE
    try:
        case = case_of_folder(folder, folder.parent)
    except DataError as err:  # no imaging.nii.gz: find_cases stops on it, test case or not
        facts.problems.append((str(err.path), err.problem, True))
        case = None
    if case is not None:
        try:
            facts.imaging = read_header(case.imaging)
            if facts.imaging.floating and (n_nan := count_nan_voxels(case.imaging)):
                facts.problems.append((str(case.imaging), f"{n_nan} NaN voxel(s) ({case.case_id}){note}", blocking))
        except DataError as err:
            facts.problems.append((str(err.path), err.problem + note, blocking))
    if facts.imaging is not None and abs(np.reshape(facts.imaging.geometry.direction, (3, 3))[2]).max() < OBLIQUE:
        facts.problems.append((str(folder / "imaging.nii.gz"), "slices are oblique to the axial plane: tile slices"
                               " along the index axis closest to world z", False))
    if facts.labelled:
        _check_labels(seg, facts)
    return facts


def _check_labels(seg: Path, facts: CaseFacts) -> None:
    """Header, grid agreement and label values of a segmentation (decoded: labels are small)."""
    try:
        facts.labels = read_header(seg)
        if facts.imaging is not None:
            check_same_grid(facts.labels.geometry, facts.imaging.geometry, seg)
        labels = check_labels(read_volume(seg).array, seg)
        facts.voxels = label_counts(labels)
    except DataError as err:
        facts.problems.append((str(err.path), err.problem, True))


def label_counts(labels: np.ndarray, chunk: int = 1 << 24) -> list[int]:
    """Voxels of label 0, 1 and 2 (uint8 labels), counted in chunks: a whole-volume bincount would
    hold an int64 copy (1.3 GB for the real 611×512×512 case_00000)."""
    flat = labels.reshape(-1)
    counts = np.zeros(3, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start : start + chunk], minlength=3)[:3]
    return counts.tolist()


def check_dataset(data: Path, workers: int = 0) -> CheckReport:
    """Check every case under ``data`` (in ``workers`` processes) into a :class:`CheckReport`."""
    data = Path(data)
    report = CheckReport("kits", data)
    root = data_root(data)
    if not root.is_dir():
        report.add(root, "dataset folder not found")
        return report
    folders = []
    for entry in sorted(root.iterdir()):
        if not looks_like_case(entry.name):
            continue
        if not entry.is_dir():
            report.add(entry, "a file named like a case, ignored: cases are folders case_XXXXX/ holding"
                              " imaging.nii.gz and segmentation.nii.gz", blocking=False)
            continue
        try:
            check_case_name(entry.name, root)
            folders.append(entry)
        except DataError as err:  # find_cases stops on a misnamed case folder
            report.add(err.path, err.problem)
    results = check_each(folders, check_case, report, path_of=lambda folder: folder, workers=workers)
    cases = [r for r in results if r is not None]
    for facts in cases:
        for path, problem, blocking in facts.problems:
            report.add(path, problem, blocking)
    if not folders:
        report.add(root, "no case_XXXXX folders")
    elif not any(c.labelled for c in cases):
        report.add(root, "no case with segmentation.nii.gz: nothing for tile to cache")
    if (root / "kits.json").is_file():
        _check_kits_json(root / "kits.json", [c.name for c in cases], report)
    _summarise(report, cases)
    return report


def _check_kits_json(path: Path, cases: list[str], report: CheckReport) -> None:
    """kits.json (the clinical data of the real release): a list of objects with a ``case_id`` each.

    The pipeline does not read it, so its problems are warnings.
    """
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        report.add(path, f"not valid JSON ({err})", blocking=False)
        return
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        report.add(path, "expected a list of objects (one per case)", blocking=False)
        return
    ids: list[str] = []
    for i, entry in enumerate(entries):
        try:
            check_case_name(entry.get("case_id"), path, what=f"[{i}].case_id")
            ids.append(entry["case_id"])
        except DataError as err:
            report.add(path, err.problem, blocking=False)
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    if doubled:
        report.add(path, f"case_id listed twice: {', '.join(doubled[:5])}", blocking=False)
    unlisted = sorted(set(cases) - set(ids))
    if unlisted:
        report.add(path, f"{len(unlisted)} case folder(s) not listed: {', '.join(unlisted[:5])}", blocking=False)
    report.counts["kits.json entries"] = len(entries)


def _summarise(report: CheckReport, cases: list[CaseFacts]) -> None:
    """Counts per split and class, voxel types, and ranges of size and spacing."""
    labelled = [c for c in cases if c.labelled]
    counted = [c.voxels for c in labelled if c.voxels is not None]
    report.counts.update({
        "cases": len(cases), "train (with segmentation)": len(labelled), "test (imaging only)": len(cases) - len(labelled),
        "cases with kidney": sum(v[1] + v[2] > 0 for v in counted), "cases with tumour": sum(v[2] > 0 for v in counted),
        "kidney voxels (label 1)": sum(v[1] for v in counted), "tumour voxels (label 2)": sum(v[2] for v in counted),
    })
    for what, headers in (("imaging", [c.imaging for c in cases]), ("segmentation", [c.labels for c in cases])):
        for dtype in sorted({h.dtype for h in headers if h is not None}):
            report.counts[f"{what} {dtype}"] = sum(h is not None and h.dtype == dtype for h in headers)
    headers = [c.header for c in cases if c.header is not None]
    report.ranges = {
        "slices": value_range(h.slices for h in headers),
        "rows (px)": value_range(h.in_plane[0] for h in headers),
        "cols (px)": value_range(h.in_plane[1] for h in headers),
        "slice spacing (mm)": value_range(round(h.thickness, 4) for h in headers),
        "pixel spacing (mm)": value_range(round(s, 4) for h in headers for s in h.pixel_spacing),
    }

