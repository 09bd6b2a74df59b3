"""``lympho tile``: decoded, centre-cropped images per patient in a cache that loads fast.

``CACHE/images/<ID>.npy`` holds a patient's images as uint8 N×3×C×C (C the crop, 112 as in the
report); ImageNet normalisation is applied on the device by the model, so the cache stays a
quarter of float32's size. ``index.csv``: ID, LABEL, n_images, AGE, LYMPH_COUNT, GENDER,
BIRTH_YEAR, BIRTH_MONTH. Reruns skip finished patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import atomic_path, read_csv, remove_partials, write_csv, write_json
from medchallenge.core.names import check_names
from medchallenge.core.parallel import map_jobs
from medchallenge.core.parts import select_part
from medchallenge.lympho.data import patient_images, read_annotations, warn_unlisted_folders


def load_image(path: Path, crop: int) -> np.ndarray:
    """Decode one image and centre-crop it: 3×crop×crop uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(path, f"unreadable image ({type(err).__name__})") from err
    h, w = array.shape[:2]
    if h < crop or w < crop:
        raise DataError(path, f"image {w}×{h} smaller than the --crop {crop}")
    y, x = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(array[y : y + crop, x : x + crop].transpose(2, 0, 1))


def _cache_patient(job: tuple[list[Path], Path, int]) -> int:
    files, target, crop = job
    stack = np.stack([load_image(f, crop) for f in files])
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(handle, stack)
    return len(files)


def build_cache(data: Path, out: Path, crop: int = 112, workers: int = 0, part: str | None = None,
                overwrite: bool = False) -> pd.DataFrame:
    """Cache every patient of ``clinical_annotation.csv``; returns the index."""
    data, out = Path(data), Path(out)
    frame = read_annotations(data / "clinical_annotation.csv")
    warn_unlisted_folders(data, frame)
    meta_file = out / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()).get("crop") != crop:
        raise OptionError(f"{out} holds images cropped to {json.loads(meta_file.read_text())['crop']} px: use another --out")
    files = {row.ID: patient_images(data, row.ID, row.LABEL) for row in frame.itertuples()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    remove_partials(out)
    write_json(meta_file, {"crop": crop, "normalisation": "ImageNet mean/std, applied by the model"})
    jobs = [(files[pid], out / "images" / f"{pid}.npy", crop) for pid in select_part(list(files), part)
            if overwrite or not (out / "images" / f"{pid}.npy").is_file()]
    console.log(f"caching {len(jobs)} patient(s) into {out} (centre crop {crop} px)")
    map_jobs(_cache_patient, jobs, workers, "tile")
    index = frame[["ID", "LABEL", "AGE", "LYMPH_COUNT", "GENDER", "BIRTH_YEAR", "BIRTH_MONTH"]].copy()
    index.insert(2, "n_images", [len(files[pid]) for pid in index["ID"]])
    index = index[[(out / "images" / f"{pid}.npy").is_file() for pid in index["ID"]]]
    write_csv(out / "index.csv", index)
    return index


def open_cache(path: Path) -> tuple[pd.DataFrame, dict]:
    """(index, meta) of a cache."""
    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "index.csv").is_file():
        raise DataError(path, "not a lymphocytosis cache: run `medchallenge lympho tile` first")
    index = read_csv(path / "index.csv", required=["ID", "LABEL", "n_images"], dtype={"ID": str})
    check_names(index["ID"], path / "index.csv", what="ID")  # IDs become images/<ID>.npy
    return index, json.loads((path / "meta.json").read_text())
