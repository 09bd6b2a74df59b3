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
from medchallenge.core.nifti import Volume, read_geometry, read_volume

VOLUME_RE = re.compile(r"^(test-)?volume-(\d+)\.nii(\.gz)?$")


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


def find_cases(data: str | Path) -> list[LitsCase]:
    """Every ``volume-N.nii[.gz]`` / ``test-volume-N.nii[.gz]`` under ``data`` (sorted by test, number)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(data, "dataset folder not found")
    cases = []
    for path in data.iterdir():
        match = VOLUME_RE.match(path.name)
        if not match:
            continue
        number, test = int(match.group(2)), bool(match.group(1))
        seg = None
        if not test:
            seg = next((p for p in (data / f"segmentation-{number}.nii", data / f"segmentation-{number}.nii.gz")
                        if p.is_file()), None)
        cases.append(LitsCase(number, path, seg, test))
    if not cases:
        raise DataError(data, "no volume-N.nii files")
    return sorted(cases, key=lambda c: (c.test, c.number))


def read_ct(path: Path) -> Volume:
    """CT in signed HU (float32); an unsigned integer volume with no negative values is an error."""
    volume = read_volume(path)
    if np.issubdtype(volume.array.dtype, np.unsignedinteger):
        raise DataError(path, f"CT stored as unsigned {volume.array.dtype} (min {int(volume.array.min())}): HU must be"
                              " signed — air is about −1000; a uint8/uint16 load wraps negative HU")
    volume.array = volume.array.astype(np.float32, copy=False)
    return volume


def read_labels(case: LitsCase, reference: Volume) -> np.ndarray:
    """Labels {0, 1, 2} on the volume's grid (uint8, SimpleITK array order)."""
    assert case.segmentation is not None
    if not read_geometry(case.segmentation).same_grid(reference.geometry):
        raise DataError(case.segmentation, f"grid differs from {case.volume.name}")
    labels = read_volume(case.segmentation).array
    if labels.min() < 0 or labels.max() > 2:
        raise DataError(case.segmentation, f"labels {sorted(set(np.unique(labels).tolist()) - {0, 1, 2})[:5]}"
                                           " outside {0, 1, 2}")
    return labels.astype(np.uint8)
