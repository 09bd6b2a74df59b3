"""The patch cache ``brats tile`` and ``lits tile`` write: normalised volumes and a patch index per class.

Cache layout (a :class:`~medchallenge.core.cache.CacheDir` of kind "brats-patches" or "lits-patches")::

    meta.json            kind, format, version and the settings (channels, classes, label values, normalisation)
    images/<case>.npy    C×S×H×W float16, normalised, axial-first (written last: marks the case finished)
    labels/<case>.npy    S×H×W uint8 class indices
    index/<case>.npz     class_k: flat indices (s·H·W + y·W + x) of body voxels of class k
    stats/<case>.json    the case's normalisation statistics (one file per case, so array jobs never share one)

Cases are processed in parallel (``--workers``), split with ``--part K/N``; reruns skip finished
cases; changed settings are a one-line error unless ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core import console
from medchallenge.core.cache import CacheDir
from medchallenge.core.io import atomic_path, write_json
from medchallenge.core.parallel import map_jobs


def body_mask(images: np.ndarray) -> np.ndarray:
    """Voxels worth sampling: inside the brain/body (any channel non-zero before normalisation)."""
    return (images != 0).any(axis=0)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_case(out: Path, name: str, images: np.ndarray, classes: np.ndarray, mask: np.ndarray,
               n_classes: int) -> None:
    """Write one case's normalised images, class labels and per-class centre index."""
    flat_cls = classes.reshape(-1)
    flat_mask = mask.reshape(-1) | (flat_cls > 0)
    index = {f"class_{k}": np.flatnonzero(flat_mask & (flat_cls == k)).astype(np.int64) for k in range(n_classes)}
    with atomic_path(out / "index" / f"{name}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **index)
    _save(out / "labels" / f"{name}.npy", classes.astype(np.uint8))
    _save(out / "images" / f"{name}.npy", images.astype(np.float16))  # last: marks the case finished


def run_cases(store: CacheDir, names: list[str], job: Callable[[str], dict[str, Any]], workers: int,
              part: str | None, overwrite: bool) -> list[str]:
    """Run ``job(name)`` for this part's unfinished cases (in parallel); returns the cases done.

    ``store`` must already be opened for writing (settings checked and recorded).
    """
    out = store.root
    for sub in ("images", "labels", "index", "stats"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    todo = store.pending(names, lambda n: out / "images" / f"{n}.npy", part, overwrite)
    console.log(f"preprocessing {len(todo)} case(s) into {out}")
    for name, stats in zip(todo, map_jobs(job, todo, workers, "tile")):
        write_json(out / "stats" / f"{name}.json", stats)
    return todo


def cached_cases(path: Path) -> list[str]:
    """Finished cases of a cache (their images file exists)."""
    return sorted(p.stem for p in (Path(path) / "images").glob("*.npy"))
