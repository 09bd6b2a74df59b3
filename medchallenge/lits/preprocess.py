"""``lits tile``: HU windowing into the patch cache (:mod:`medchallenge.havaei.patches`, kind "lits-patches")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError
from medchallenge.havaei.patches import run_cases, write_case
from medchallenge.lits.data import LitsCase, find_cases, read_ct, read_labels
from medchallenge.lits.models import N_CLASSES

CACHE_KIND = "lits-patches"
HU_WINDOW = (-200.0, 250.0)
BODY_HU = -500.0  # voxels above it are the body: patch centres are drawn there (air is about -1000)


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """HU clipped to [−200, 250] and scaled to about [−2, 2]; 1×S×H×W float32 from S×H×W."""
    low, high = HU_WINDOW
    return ((np.clip(hu, low, high) - (low + high) / 2) / ((high - low) / 4))[None].astype(np.float32)


def cache_settings() -> dict[str, Any]:
    """What the cache's content depends on (a change is refused unless --overwrite)."""
    return {"channels": ["ct"], "class_values": [0, 1, 2], "label_values": [0, 1, 2], "hu_window": list(HU_WINDOW),
            "body_hu": BODY_HU, "normalisation": f"HU clipped to {list(HU_WINDOW)}, (x - 25) / 112.5"}


class _TileJob:
    """Picklable job for the process pool: one volume into the cache."""

    def __init__(self, cases: dict[str, LitsCase], out: Path) -> None:
        self.cases, self.out = cases, out

    def __call__(self, name: str) -> dict[str, Any]:
        case = self.cases[name]
        volume = read_ct(case.volume)
        labels = np.moveaxis(read_labels(case, volume), volume.axial_axis, 0)
        hu = volume.axial_first()
        write_case(self.out, name, normalise_ct(hu), labels, hu > BODY_HU, N_CLASSES)
        return {"hu_min": float(hu.min()), "hu_max": float(hu.max())}


def tile_lits(data: Path, out: Path, workers: int = 0, part: str | None = None, overwrite: bool = False) -> list[str]:
    """Normalise every labelled volume and index its voxels by class; returns the volumes done."""
    cases = {c.name: c for c in find_cases(data) if c.segmentation is not None}
    if not cases:
        raise DataError(data, "no volume-N.nii with a segmentation-N.nii to train on")
    store = CacheDir(out, CACHE_KIND)
    store.open_for_writing(cache_settings(), overwrite)
    return run_cases(store, list(cases), _TileJob(cases, Path(out)), workers, part, overwrite)
