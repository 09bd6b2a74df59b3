"""``brats tile`` / ``lits tile``: normalised volumes and a patch index of centre voxels per class.

Cache layout (shared by BraTS and LiTS)::

    meta.json            channels, classes (label value per class index), normalisation, per-case stats
    images/<case>.npy    C×S×H×W float16, normalised, axial-first
    labels/<case>.npy    S×H×W uint8 class indices (BraTS 0,1,2,4 → 0,1,2,4; class 3 unused)
    index/<case>.npz     class_k: flat indices (s·H·W + y·W + x) of foreground-of-the-body voxels of class k

BraTS normalisation (per volume, per channel): clip to the 1st and 99th percentiles of the
brain (non-zero) voxels, then z-score over the brain; the background stays 0. The statistics are
saved in meta.json. Cases are processed in parallel (``--workers``); reruns skip finished cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path, remove_partials, write_json
from medchallenge.core.parallel import map_jobs
from medchallenge.core.parts import select_part


def normalise_brats(images: np.ndarray) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Per-channel percentile clip + z-score over the brain (any non-zero channel). C×S×H×W float32."""
    brain = (images != 0).any(axis=0)
    out = np.zeros_like(images, dtype=np.float32)
    stats: dict[str, list[float]] = {"p1": [], "p99": [], "mean": [], "std": []}
    for k, channel in enumerate(images):
        values = channel[brain]
        if values.size == 0:
            for key in stats:
                stats[key].append(0.0)
            continue
        lo, hi = np.percentile(values, [1, 99])
        clipped = np.clip(values, lo, hi)
        mean, std = float(clipped.mean()), float(clipped.std()) + 1e-6
        out[k][brain] = (clipped - mean) / std
        for key, v in zip(stats, (lo, hi, mean, std)):
            stats[key].append(float(v))
    return out, stats


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


def run_cases(out: Path, names: list[str], job: Callable[[str], dict[str, Any]], meta: dict[str, Any],
              workers: int, part: str | None, overwrite: bool) -> dict[str, Any]:
    """Run ``job(name)`` for unfinished cases (in parallel), merge per-case stats into meta.json."""
    out = Path(out)
    for sub in ("images", "labels", "index"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    remove_partials(out)
    meta_file = out / "meta.json"
    old = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    stats = dict(old.get("stats", {}))
    todo = [n for n in select_part(names, part) if overwrite or not (out / "images" / f"{n}.npy").is_file()]
    console.log(f"preprocessing {len(todo)} case(s) into {out}")
    results = map_jobs(job, todo, workers, "tile")
    for name, result in zip(todo, results):
        stats[name] = result
    meta = {**meta, "stats": stats}
    write_json(meta_file, meta)
    return meta


def open_cache(path: Path) -> dict[str, Any]:
    """meta.json of a patch cache (DataError when it is not one)."""
    meta_file = Path(path) / "meta.json"
    if not meta_file.is_file():
        raise DataError(path, "not a patch cache (no meta.json): run `tile` first")
    return json.loads(meta_file.read_text())


def cached_cases(path: Path) -> list[str]:
    return sorted(p.stem for p in (Path(path) / "images").glob("*.npy"))
