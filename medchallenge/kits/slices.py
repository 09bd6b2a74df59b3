"""``kits tile``: axial slices into a cache that training reads fast.

Each case becomes ``images/case_XXXXX.npy`` (slices × rows × cols, float16: HU clipped to the
window and normalised as (x − mean)/std, by default the common KiTS19 choice window [−79, 304],
mean 101, std 76.9) and ``labels/case_XXXXX.npy`` (uint8), both memory-mapped at training time.
``index.csv`` lists every slice with whether it holds kidney or tumour (for oversampling).
Per-case files are written atomically; a rerun skips finished cases; ``index.csv`` is rebuilt
from all finished cases, so ``--part K/N`` jobs can share the folder. ``meta.json`` is a
``core.cache.CacheDir`` record (kind ``kits-slices``) of the window, mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import atomic_path, write_csv
from medchallenge.core.parallel import map_jobs
from medchallenge.kits.data import Case, find_cases, read_case


@dataclass(frozen=True)
class Normalisation:
    """HU window and z-score applied to CT before the network (saved with cache and checkpoint)."""

    low: float = -79.0
    high: float = 304.0
    mean: float = 101.0
    std: float = 76.9

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """HU (any shape) → normalised float32."""
        return (np.clip(hu, self.low, self.high, dtype=np.float32) - self.mean) / self.std

    @property
    def background(self) -> float:
        """The normalised value of air (used to pad)."""
        return (self.low - self.mean) / self.std


def parse_window(spec: str) -> tuple[float, float]:
    """``"-79,304"`` → (−79.0, 304.0)."""
    try:
        low, high = (float(v) for v in spec.split(","))
    except ValueError as err:
        raise OptionError(f"--window {spec}: expected LOW,HIGH in HU, e.g. -79,304") from err
    if low >= high:
        raise OptionError(f"--window {spec}: LOW must be below HIGH")
    return low, high


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _tile_case(job: tuple[Case, Path, Normalisation]) -> str:
    case, out, norm = job
    image, labels = read_case(case)
    assert labels is not None
    stack = norm(image.axial_first()).astype(np.float16)
    _save(out / "labels" / f"{case.case_id}.npy", np.ascontiguousarray(np.moveaxis(labels, image.axial_axis, 0)))
    _save(out / "images" / f"{case.case_id}.npy", np.ascontiguousarray(stack))  # last: marks the case finished
    return case.case_id


def rebuild_index(out: Path) -> pd.DataFrame:
    """``index.csv`` from every finished case: case, slice, has_kidney, has_tumor, height, width."""
    rows = []
    for image_file in sorted((out / "images").glob("case_*.npy")):
        labels = np.load(out / "labels" / image_file.name, mmap_mode="r")
        kidney = (labels > 0).any(axis=(1, 2))
        tumour = (labels > 1).any(axis=(1, 2))
        for k in range(labels.shape[0]):
            rows.append((image_file.stem, k, bool(kidney[k]), bool(tumour[k]), labels.shape[1], labels.shape[2]))
    frame = pd.DataFrame(rows, columns=["case", "slice", "has_kidney", "has_tumor", "height", "width"])
    write_csv(out / "index.csv", frame)
    return frame


KIND = "kits-slices"


def tile_cases(data: Path, out: Path, cases: list[int] | None = None, window: tuple[float, float] = (-79.0, 304.0),
               mean: float = 101.0, std: float = 76.9, workers: int = 0, part: str | None = None,
               overwrite: bool = False) -> pd.DataFrame:
    """Cache the axial slices of every case with a segmentation; returns the slice index.

    The cache is a ``core.cache.CacheDir`` of kind ``kits-slices``: other normalisation settings
    than the cache's are an error naming them unless ``overwrite``; finished cases (their image
    file, written last) are skipped; ``part`` takes every N-th case.
    """
    norm = Normalisation(window[0], window[1], mean, std)
    cache = CacheDir(out, KIND)
    found = find_cases(data, cases, need_segmentation=True)
    skipped = [] if cases is None else sorted(set(cases) - {c.number for c in found})
    if skipped:
        console.warn(f"case(s) without segmentation.nii.gz skipped: {', '.join(f'case_{n:05d}' for n in skipped[:5])}")
    cache.open_for_writing({"window": list(window), "mean": mean, "std": std}, overwrite)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    todo = cache.pending(found, lambda c: out / "images" / f"{c.case_id}.npy", part, overwrite)
    console.log(f"caching {len(todo)} case(s) into {out} (window {window[0]:g},{window[1]:g} HU)")
    map_jobs(_tile_case, [(c, out, norm) for c in todo], workers, "tile")
    return rebuild_index(out)


def load_meta(slices: Path) -> Normalisation:
    """The normalisation a slice cache was written with (a DataError for no cache or an old-format one)."""
    settings = CacheDir(slices, KIND).settings()
    try:
        return Normalisation(settings["window"][0], settings["window"][1], settings["mean"], settings["std"])
    except (KeyError, IndexError, TypeError) as err:
        raise DataError(Path(slices) / "meta.json", f"slice cache settings without the normalisation ({err})") from err
