"""BraTS preprocessing into the patch cache (see :mod:`medchallenge.brats.patches`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medchallenge.brats.data import CONVENTIONS, MODALITIES, BratsCase, find_cases, read_case
from medchallenge.brats.patches import body_mask, normalise_brats, run_cases, write_case
from medchallenge.core.errors import DataError

N_CLASSES = 5  # class index = BraTS 2021 label value (3 unused); 2023 labels are mapped onto them


def _job(args: tuple[BratsCase, Path]) -> dict[str, Any]:
    case, out = args
    images, _, labels = read_case(case)
    assert labels is not None
    normalised, stats = normalise_brats(images)
    write_case(out, case.name, normalised, labels, body_mask(images), N_CLASSES)
    return stats


def tile_brats(data: Path, out: Path, workers: int = 0, part: str | None = None, overwrite: bool = False) -> dict:
    """Normalise every labelled case and index its voxels by class.

    The cache holds one label convention (recorded in meta.json as ``convention``, with its
    label values and the model class of each): a dataset mixing the 2021 and 2023 namings is
    an error, and so is adding cases of the other convention to an existing cache.
    """
    cases = [c for c in find_cases(data) if c.segmentation is not None]
    if not cases:
        raise DataError(data, "no case with a <case>_seg.nii[.gz] (or <case>-seg.nii.gz) to train on")
    conventions = sorted({c.convention for c in cases})
    if len(conventions) > 1:
        example = {c.convention: c.name for c in cases}
        raise DataError(data, "cases in both the 2021 and the 2023 naming (e.g. "
                              f"{example['brats2021']} and {example['brats2023']}): tile them into separate caches")
    convention = CONVENTIONS[conventions[0]]
    old = Path(out) / "meta.json"
    if old.is_file() and json.loads(old.read_text()).get("convention", "brats2021") != convention.name:
        raise DataError(old, f"a cache of another label convention; these cases are {convention.name}")
    by_name = {c.name: c for c in cases}
    meta = {"challenge": "brats", "convention": convention.name, "channels": list(MODALITIES),
            "files": list(convention.files), "class_values": list(range(N_CLASSES)),
            "label_values": list(convention.labels),
            "class_of_label": {str(k): v for k, v in convention.class_of_label.items()},
            "normalisation": "per volume: clip 1st/99th percentile, z-score"}
    return run_cases(out, list(by_name), _Job(by_name, Path(out)), meta, workers, part, overwrite)


class _Job:
    """Picklable job for the process pool."""

    def __init__(self, cases: dict[str, BratsCase], out: Path) -> None:
        self.cases, self.out = cases, out

    def __call__(self, name: str) -> dict[str, Any]:
        return _job((self.cases[name], self.out))
