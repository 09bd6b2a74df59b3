"""The LiTS layout: ``volume-N.nii`` (CT, signed HU), ``segmentation-N.nii`` (0, 1 liver, 2 tumour),
``test-volume-N.nii``. CT must stay signed: a volume stored unsigned without a rescale (the
report's own bug wrapped negative HU into large positives) is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name
from medchallenge.core.nifti import Geometry, Volume, read_geometry, read_volume

VOLUME_RE = re.compile(r"^(test-)?volume-(\d+)\.nii(\.gz)?$")


SEG_RE = re.compile(r"^(test-)?segmentation-(\d+)\.nii(\.gz)?$")
LABELS = (0, 1, 2)


@dataclass(frozen=True)
class LitsCase:
    """A volume, its number and its segmentation (None for test volumes)."""

    number: int
    volume: Path
    segmentation: Path | None
    test: bool

    @property
    def name(self) -> str:
        return f"{'test-' if self.test else ''}volume-{self.number}"

    @property
    def prediction_name(self) -> str:
        """The challenge's submission name: ``test-volume-N`` → ``test-segmentation-N.nii``,
        ``volume-N`` → ``segmentation-N.nii``."""
        return f"{'test-' if self.test else ''}segmentation-{self.number}.nii"


def find_cases(data: str | Path) -> list[LitsCase]:
    """Every ``volume-N.nii[.gz]`` / ``test-volume-N.nii[.gz]`` under ``data`` (sorted by test, number).

    Raises:
        DataError: no volume, or two files that are the same case (``volume-1.nii`` and
            ``volume-1.nii.gz``, ``volume-01.nii`` and ``volume-1.nii``): their outputs would collide.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(data, "dataset folder not found")
    cases: dict[str, LitsCase] = {}
    for path in sorted(data.iterdir()):
        match = VOLUME_RE.match(path.name)
        if not match:
            continue
        check_name(path.name, data, what="volume", pattern=VOLUME_RE)
        number, test = int(match.group(2)), bool(match.group(1))
        seg = None
        if not test:
            seg = next((p for p in (data / f"segmentation-{number}.nii", data / f"segmentation-{number}.nii.gz")
                        if p.is_file()), None)
        case = LitsCase(number, path, seg, test)
        if case.name in cases:
            raise DataError(path, f"same case as {cases[case.name].volume.name} ({case.name}): their outputs would"
                                  " collide; keep one")
        cases[case.name] = case
    if not cases:
        raise DataError(data, "no volume-N.nii files")
    return sorted(cases.values(), key=lambda c: (c.test, c.number))


def find_segmentations(folder: str | Path) -> dict[str, Path]:
    """``segmentation-N`` / ``test-segmentation-N`` (the name without extension) → file, in ``folder``.

    Raises:
        DataError: the same name twice (``.nii`` and ``.nii.gz``).
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).glob("*segmentation-*.nii*")):
        match = SEG_RE.match(path.name)
        if not match:
            continue
        key = check_name(f"{match.group(1) or ''}segmentation-{int(match.group(2))}", folder, what="segmentation")
        if key in found:
            raise DataError(path, f"same case as {found[key].name}: keep one")
        found[key] = path
    return found


def check_label_map(labels: np.ndarray, path: Path) -> np.ndarray:
    """Labels {0, 1, 2} as uint8 (any storage type: float 0/1/2 masks are fine); others are an error."""
    bad = sorted(v for v in np.unique(labels).tolist() if v not in LABELS)
    if bad:
        raise DataError(path, f"labels [{', '.join(f'{v:g}' for v in bad[:5])}] outside {{0, 1, 2}}"
                              " (0 background, 1 liver, 2 tumour)")
    return labels.astype(np.uint8)


def read_ct(path: Path) -> Volume:
    """CT in signed HU (float32); an unsigned integer volume with no negative values is an error."""
    volume = read_volume(path)
    check_ct_dtype(volume.array.dtype, path, f" (min {int(volume.array.min())})")
    volume.array = volume.array.astype(np.float32, copy=False)
    return volume


def check_ct_dtype(dtype: np.dtype, path: Path, detail: str = "") -> None:
    """CT voxels must be signed: an unsigned integer type (as stored, after any rescale) is an error."""
    if np.issubdtype(dtype, np.unsignedinteger):
        raise DataError(path, f"CT stored as unsigned {np.dtype(dtype)}{detail}: HU must be signed — air is about"
                              " −1000; a uint8/uint16 load wraps negative HU")


def check_segmentation_grid(segmentation: Path, volume: Path, geometry: Geometry) -> None:
    """The segmentation's header must put its voxels on the volume's grid (size, spacing, origin, direction)."""
    if not read_geometry(segmentation).same_grid(geometry):
        raise DataError(segmentation, f"grid differs from {volume.name}")


def read_labels(case: LitsCase, reference: Volume) -> np.ndarray:
    """Labels {0, 1, 2} on the volume's grid (uint8, SimpleITK array order)."""
    assert case.segmentation is not None
    check_segmentation_grid(case.segmentation, case.volume, reference.geometry)
    return check_label_map(read_volume(case.segmentation).array, case.segmentation)
