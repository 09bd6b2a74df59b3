"""``lympho tile``: decoded, centre-cropped images per patient in a cache that loads fast.

``CACHE/images/<ID>.npy`` holds a patient's images as uint8 N×3×C×C (C the crop, 112 as in the
report); ImageNet normalisation is applied on the device by the model, so the cache stays a
quarter of float32's size. ``index.csv``: ID, LABEL, n_images, AGE, LYMPH_COUNT, GENDER,
BIRTH_YEAR, BIRTH_MONTH. ``meta.json`` is the shared :class:`~medchallenge.core.cache.CacheDir`
format (kind ``lympho-crops``, setting ``crop``). Reruns skip finished patients; ``--part K/N``
takes every N-th patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path, read_csv, write_csv
from medchallenge.core.names import check_names
from medchallenge.core.parallel import map_jobs
from medchallenge.lympho.data import patient_images, read_annotations, warn_unlisted_folders

KIND = "lympho-crops"


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in px from the file's header (nothing decoded); DataError when PIL cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(path, f"unreadable image ({type(err).__name__})") from err


def check_crop(path: Path, size: tuple[int, int], crop: int) -> None:
    """DataError when an image of ``size`` (w, h) cannot give a ``crop``×``crop`` centre crop."""
    if size[0] < crop or size[1] < crop:
        raise DataError(path, f"image {size[0]}×{size[1]} smaller than the --crop {crop}")


def load_image(path: Path, crop: int) -> np.ndarray:
    """Decode one image and centre-crop it: 3×crop×crop uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(path, f"unreadable image ({type(err).__name__})") from err
    h, w = array.shape[:2]
    check_crop(path, (w, h), crop)
    y, x = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(array[y : y + crop, x : x + crop].transpose(2, 0, 1))


def _cache_patient(job: tuple[list[Path], Path, int]) -> int:
    files, target, crop = job
    stack = np.stack([load_image(f, crop) for f in files])
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(handle, stack)
    return len(files)


def cache_dir(root: Path) -> CacheDir:
    """The crops cache at ``root`` (meta.json in the shared CacheDir format, settings ``crop``)."""
    return CacheDir(root, KIND)


def build_cache(data: Path, out: Path, crop: int = 112, workers: int = 0, part: str | None = None,
                overwrite: bool = False) -> pd.DataFrame:
    """Cache every patient of ``clinical_annotation.csv`` (this ``part``'s pending ones); returns the index.

    A cache made with another ``crop`` is refused (one line naming it) unless ``overwrite``.
    """
    data, out = Path(data), Path(out)
    frame = read_annotations(data / "clinical_annotation.csv")
    warn_unlisted_folders(data, frame)
    files = {row.ID: patient_images(data, row.ID, row.LABEL) for row in frame.itertuples()}
    cache = cache_dir(out)
    cache.open_for_writing({"crop": crop}, overwrite)
    (out / "images").mkdir(parents=True, exist_ok=True)
    todo = cache.pending(list(files), lambda pid: out / "images" / f"{pid}.npy", part, overwrite)
    jobs = [(files[pid], out / "images" / f"{pid}.npy", crop) for pid in todo]
    console.log(f"caching {len(jobs)} patient(s) into {out} (centre crop {crop} px)")
    map_jobs(_cache_patient, jobs, workers, "tile")
    index = frame[["ID", "LABEL", "AGE", "LYMPH_COUNT", "GENDER", "BIRTH_YEAR", "BIRTH_MONTH"]].copy()
    index.insert(2, "n_images", [len(files[pid]) for pid in index["ID"]])
    index = index[[(out / "images" / f"{pid}.npy").is_file() for pid in index["ID"]]]
    write_csv(out / "index.csv", index)
    return index


def open_cache(path: Path) -> tuple[pd.DataFrame, dict]:
    """(index, settings) of a cache; settings hold ``crop``."""
    path = Path(path)
    settings = cache_dir(path).settings()
    if not (path / "index.csv").is_file():
        raise DataError(path, "not a lymphocytosis cache (no index.csv): run `medchallenge lympho tile` first")
    index = read_csv(path / "index.csv", required=["ID", "LABEL", "n_images"], dtype={"ID": str})
    check_names(index["ID"], path / "index.csv", what="ID")  # IDs become images/<ID>.npy
    return index, settings
