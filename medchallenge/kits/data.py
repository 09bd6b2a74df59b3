"""The KiTS19 layout: ``data/case_XXXXX/imaging.nii.gz`` (HU) and ``segmentation.nii.gz`` (0, 1, 2).

Cases 00000–00209 are training (with segmentation), 00210–00299 test (imaging only). The folder
given as ``--data`` may be the kits19 repository (holding ``data/``) or the ``data/`` folder itself.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name
from medchallenge.core.nifti import Geometry, Volume, read_geometry, read_volume

LABELS = {0: "background", 1: "kidney", 2: "tumor"}
CASE_PATTERN = re.compile(r"case_[0-9]{5}")
"""A KiTS case name, matched whole: ASCII digits only (``\\d`` would take other scripts' digits, and
``$`` a trailing newline, both of which ``int`` accepts and a path would carry)."""


def looks_like_case(name: str) -> bool:
    """Whether a folder entry is meant as a case (``case_…``): such names must then fit ``case_XXXXX``."""
    return name.lower().startswith("case_")


def check_case_name(name: str, source: str | Path, what: str = "case folder") -> int:
    """The number of a ``case_XXXXX`` name; any other name is a DataError (exit 2) naming ``source``."""
    check_name(name, source, what=what, pattern=CASE_PATTERN)
    return int(name[5:])


def case_name(number: int, source: str | Path = "--cases") -> str:
    """``case_XXXXX`` of a requested case number, checked (a number beyond five digits has no case)."""
    name = f"case_{number:05d}"
    check_case_name(name, source, what="case")
    return name


@dataclass(frozen=True)
class Case:
    """One case folder: its id (``case_00042``), number, imaging and (optional) segmentation."""

    case_id: str
    number: int
    imaging: Path
    segmentation: Path | None


def data_root(data: str | Path) -> Path:
    """The folder holding the ``case_XXXXX`` folders (``DATA/data`` when it exists)."""
    data = Path(data)
    if (data / "data").is_dir() and not any(looks_like_case(p.name) for p in data.iterdir() if p.is_dir()):
        return data / "data"
    return data


def case_of_folder(folder: Path, root: Path) -> Case:
    """The case in ``folder`` (a ``case_XXXXX`` folder under ``root``); the segmentation is optional.

    Raises:
        DataError: a misnamed folder (naming ``root``), or no ``imaging.nii.gz`` (naming the folder).
    """
    number = check_case_name(folder.name, root)
    imaging = folder / "imaging.nii.gz"
    if not imaging.is_file():
        raise DataError(folder, "case folder without imaging.nii.gz")
    seg = folder / "segmentation.nii.gz"
    return Case(folder.name, number, imaging, seg if seg.is_file() else None)


def find_cases(data: str | Path, numbers: list[int] | None = None, need_segmentation: bool = False) -> list[Case]:
    """The cases under ``data`` (sorted), optionally only ``numbers`` and only those with labels.

    Raises:
        DataError: no case folder at all, a ``case_…`` folder whose name is not ``case_XXXXX``, a
            case folder without ``imaging.nii.gz``, or a requested case that does not exist.
    """
    root = data_root(data)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    for number in numbers or []:
        case_name(number)
    cases = []
    for folder in sorted(root.iterdir()):
        if not (folder.is_dir() and looks_like_case(folder.name)):
            continue  # kits.json and other entries of the real data/ folder
        number = check_case_name(folder.name, root)  # the folder named in the message, quoted
        if numbers is not None and number not in numbers:
            continue
        case = case_of_folder(folder, root)
        if need_segmentation and case.segmentation is None:
            continue
        cases.append(case)
    if numbers is not None:
        missing = sorted(set(numbers) - {c.number for c in cases})
        if missing and not need_segmentation:
            raise DataError(root, f"case(s) not found: {', '.join(f'case_{n:05d}' for n in missing[:5])}")
    if not cases:
        raise DataError(root, "no case_XXXXX folders" + (" with segmentation.nii.gz" if need_segmentation else ""))
    return cases


def check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """Labels as uint8 {0, 1, 2}; anything else is a DataError naming the file."""
    outside = labels > 2
    if np.issubdtype(labels.dtype, np.signedinteger) or np.issubdtype(labels.dtype, np.floating):
        outside |= labels < 0
    if np.issubdtype(labels.dtype, np.floating):
        outside |= labels != np.round(labels)
    if outside.any():
        bad = np.unique(labels[outside])[:5].tolist()
        raise DataError(path, f"labels {bad} outside {{0, 1, 2}} (background, kidney, tumor)")
    return labels.astype(np.uint8, copy=False)


def count_nan_voxels(path: Path, chunk: int = 1 << 24) -> int:
    """NaN voxels stored in a floating-point NIfTI file (0 for integer files, which cannot hold NaN).

    SimpleITK's NIfTI reader silently turns stored NaN into 0, so the voxels are counted from the
    file's own bytes, streamed in chunks (no copy of the volume).
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return 0
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            endian = "<" if struct.unpack("<i", header[:4])[0] in (348, 540) else ">"
            if struct.unpack(endian + "i", header[:4])[0] == 540:  # NIfTI-2
                datatype = struct.unpack(endian + "h", header[12:14])[0]
                offset = struct.unpack(endian + "q", header[168:176])[0]
            else:
                datatype = struct.unpack(endian + "h", header[70:72])[0]
                offset = int(struct.unpack(endian + "f", header[108:112])[0])
            dtype = {16: "f4", 64: "f8"}.get(datatype)
            if dtype is None:
                return 0
            dtype = np.dtype(endian + dtype)
            handle.seek(max(offset, 348))
            count = 0
            rest = b""
            while block := handle.read(chunk):
                block = rest + block
                usable = len(block) - len(block) % dtype.itemsize
                count += int(np.isnan(np.frombuffer(block[:usable], dtype)).sum())
                rest = block[usable:]
            return count
    except (OSError, EOFError, struct.error) as err:
        raise DataError(path, f"truncated or corrupt file ({type(err).__name__})") from err


def check_same_grid(labels: Geometry, imaging: Geometry, path: Path) -> None:
    """Refuse a segmentation (``path``) whose grid is not the imaging's (size, spacing, origin, direction)."""
    if not labels.same_grid(imaging):
        raise DataError(
            path,
            f"grid differs from imaging.nii.gz (size {labels.size} vs {imaging.size},"
            f" spacing {tuple(round(s, 3) for s in labels.spacing)} vs"
            f" {tuple(round(s, 3) for s in imaging.spacing)})",
        )


def read_case(case: Case, with_labels: bool = True, as_float: bool = True) -> tuple[Volume, np.ndarray | None]:
    """Imaging (HU, float32; as stored, e.g. int16, with ``as_float=False``) and labels (uint8, same
    numpy layout), geometry checked.

    Raises:
        DataError: unreadable files, not 3-D, NaN voxels (counted from the file's bytes: SimpleITK
            reads them as 0), image and segmentation on different
            grids, labels outside {0, 1, 2}.
    """
    image = read_volume(case.imaging, dtype=np.float32 if as_float else None)
    if n_nan := count_nan_voxels(case.imaging):
        raise DataError(case.imaging, f"{n_nan} NaN voxel(s) ({case.case_id})")
    labels = None
    if with_labels and case.segmentation is not None:
        check_same_grid(read_geometry(case.segmentation), image.geometry, case.segmentation)
        labels = check_labels(read_volume(case.segmentation).array, case.segmentation)
    return image, labels
