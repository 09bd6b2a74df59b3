"""``brats tile``: per-volume normalisation into the patch cache (:mod:`medchallenge.havaei.patches`).

Normalisation (per volume, per channel): clip to the 1st and 99th percentiles of the brain
(non-zero) voxels, then z-score over the brain; the background stays 0. The statistics go to
``stats/<case>.json``. The cache holds one label convention, recorded in its settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.brats.data import CONVENTIONS, MODALITIES, BratsCase, Convention, find_cases, read_case
from medchallenge.brats.models import N_CLASSES
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError
from medchallenge.havaei.patches import body_mask, run_cases, write_case

CACHE_KIND = "brats-patches"
NORMALISATION = "per volume: clip 1st/99th percentile, z-score"


def normalise_brats(images: np.ndarray, inplace: bool = False,
                    brain: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Per-channel percentile clip + z-score over the brain (any non-zero channel). C×S×H×W float32.

    ``inplace`` (float32 ``images`` only): overwrite ``images`` instead of allocating a second
    whole-volume array (``predict`` holds one copy of a case); the background is 0 either way.
    ``brain``: the S×H×W mask when the caller already has it.
    """
    brain = (images != 0).any(axis=0) if brain is None else brain
    if inplace and images.dtype != np.float32:
        raise TypeError(f"normalise_brats(inplace=True) needs float32 images, got {images.dtype}")
    out = images if inplace else np.zeros_like(images, dtype=np.float32)
    stats: dict[str, list[float]] = {"p1": [], "p99": [], "mean": [], "std": []}
    for k, channel in enumerate(images):
        values = channel[brain].astype(np.float32, copy=False)  # a copy (boolean index): worked on in place
        if values.size == 0:
            for key in stats:
                stats[key].append(0.0)
            continue
        # float32 in place, sums in float64: no float64 copy of a channel (a real case's brain is ~1.5M voxels)
        lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
        np.clip(values, lo, hi, out=values)
        mean = float(values.mean(dtype=np.float64))
        values -= np.float32(mean)
        std = float(np.sqrt(np.mean(np.square(values), dtype=np.float64))) + 1e-6
        values /= np.float32(std)
        out[k][brain] = values
        for key, v in zip(stats, (lo, hi, mean, std)):
            stats[key].append(float(v))
    return out, stats


def cache_settings(convention: Convention) -> dict[str, Any]:
    """What the cache's content depends on (a change is refused unless --overwrite)."""
    return {"convention": convention.name, "channels": list(MODALITIES), "files": list(convention.files),
            "class_values": list(range(N_CLASSES)), "label_values": list(convention.labels),
            "class_of_label": {str(k): v for k, v in convention.class_of_label.items()},
            "normalisation": NORMALISATION}


def _convention_of(cases: list[BratsCase], data: Path) -> Convention:
    conventions = sorted({c.convention for c in cases})
    if len(conventions) > 1:
        example = {c.convention: c.name for c in cases}
        raise DataError(data, "cases in both the 2021 and the 2023 naming (e.g. "
                              f"{example['brats2021']} and {example['brats2023']}): tile them into separate caches")
    return CONVENTIONS[conventions[0]]


def tile_brats(data: Path, out: Path, workers: int = 0, part: str | None = None, overwrite: bool = False) -> list[str]:
    """Normalise every labelled case and index its voxels by class; returns the cases done.

    A dataset mixing the 2021 and 2023 namings is an error, and so is adding cases of the other
    convention to an existing cache — even with ``--overwrite``, which redoes only this run's
    cases and would leave a cache of two conventions.
    """
    cases = [c for c in find_cases(data) if c.segmentation is not None]
    if not cases:
        raise DataError(data, "no case with a <case>_seg.nii[.gz] (or <case>-seg.nii.gz) to train on")
    convention = _convention_of(cases, Path(data))
    store = CacheDir(out, CACHE_KIND)
    if store.meta_file.is_file() and store.settings().get("convention") != convention.name:
        raise DataError(store.meta_file, f"a cache of another label convention"
                                         f" ({store.settings().get('convention')}); these cases are {convention.name}")
    store.open_for_writing(cache_settings(convention), overwrite)
    by_name = {c.name: c for c in cases}
    return run_cases(store, list(by_name), _Job(by_name, Path(out)), workers, part, overwrite)


class _Job:
    """Picklable job for the process pool: one case into the cache."""

    def __init__(self, cases: dict[str, BratsCase], out: Path) -> None:
        self.cases, self.out = cases, out

    def __call__(self, name: str) -> dict[str, Any]:
        images, _, labels = read_case(self.cases[name])
        assert labels is not None
        normalised, stats = normalise_brats(images)
        write_case(self.out, name, normalised, labels, body_mask(images), N_CLASSES)
        return stats
