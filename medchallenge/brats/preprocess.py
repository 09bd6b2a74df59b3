"""BraTS preprocessing into the patch cache (see :mod:`medchallenge.brats.patches`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medchallenge.brats.data import LABEL_VALUES, MODALITIES, BratsCase, find_cases, read_case
from medchallenge.brats.patches import body_mask, normalise_brats, run_cases, write_case
from medchallenge.core.errors import DataError

N_CLASSES = 5  # class index = BraTS label value; 3 is unused in BraTS 2020/2021


def _job(args: tuple[BratsCase, Path]) -> dict[str, Any]:
    case, out = args
    images, _, labels = read_case(case)
    assert labels is not None
    normalised, stats = normalise_brats(images)
    write_case(out, case.name, normalised, labels, body_mask(images), N_CLASSES)
    return stats


def tile_brats(data: Path, out: Path, workers: int = 0, part: str | None = None, overwrite: bool = False) -> dict:
    """Normalise every labelled case and index its voxels by class."""
    cases = [c for c in find_cases(data) if c.segmentation is not None]
    if not cases:
        raise DataError(data, "no case with a <case>_seg.nii[.gz] to train on")
    by_name = {c.name: c for c in cases}
    meta = {"challenge": "brats", "channels": list(MODALITIES), "class_values": list(range(N_CLASSES)),
            "label_values": list(LABEL_VALUES), "normalisation": "per volume: clip 1st/99th percentile, z-score"}
    return run_cases(out, list(by_name), _Job(by_name, Path(out)), meta, workers, part, overwrite)


class _Job:
    """Picklable job for the process pool."""

    def __init__(self, cases: dict[str, BratsCase], out: Path) -> None:
        self.cases, self.out = cases, out

    def __call__(self, name: str) -> dict[str, Any]:
        return _job((self.cases[name], self.out))
