"""Mask folders (what ``panda predict`` writes with a U-Net) and their overlay PNGs.

A mask folder::

    meta.json        scheme, providers, tile_size, n_tiles, level, checkpoints
    index.csv        image_id, data_provider
    masks/{id}.npz   masks (N×T×T uint8 labels in the scheme)
    overlays/{id}.png  tile mosaic with the mask in colour (truth beside it when known)

Several U-Nets (one per provider) may fill one folder; its settings must then agree.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path, write_csv, write_json
from medchallenge.core.plots import overlay_labels, save_image_grid
from medchallenge.panda.data import check_image_ids
from medchallenge.panda.labels import COLOURS


class MaskFolder:
    """A folder of predicted mask tiles (see the module docstring).

    Raises:
        DataError: no meta.json, or an ``image_id`` in index.csv that is not a PANDA id.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise DataError(self.path, "not a mask folder (no meta.json): write one with"
                                       " `medchallenge panda predict --checkpoint UNET.pt --tiles TILES --out DIR`")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        index = self.path / "index.csv"
        self.index = pd.read_csv(index, dtype={"image_id": str}) if index.is_file() else \
            pd.DataFrame(columns=["image_id", "data_provider"])
        # ids become file names (masks/{id}.npz): a hand-edited index must not reach outside the folder
        check_image_ids(self.index, index)

    @property
    def scheme(self) -> str:
        return str(self.meta["scheme"])

    def file(self, image_id: str) -> Path:
        return self.path / "masks" / f"{image_id}.npz"

    def ids(self) -> set[str]:
        return set(self.index["image_id"])

    def load(self, image_id: str, tile_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Mask tiles N×T×T uint8 of one slide; ``tile_shape`` (N, T, T) is checked when given."""
        path = self.file(image_id)
        try:
            with np.load(path) as data:
                masks = data["masks"]
        except FileNotFoundError as err:
            raise DataError(path, "slide missing from the mask folder") from err
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(path, f"corrupt mask file ({err})") from err
        if tile_shape is not None and tuple(masks.shape) != tuple(tile_shape):
            raise DataError(path, f"mask tiles of shape {tuple(masks.shape)} do not match image tiles {tuple(tile_shape)}"
                                  " (N×T×T)")
        return masks


def tile_mosaic(tiles: np.ndarray) -> np.ndarray:
    """N×T×T[×C] → the ⌈√N⌉-square mosaic (g·T)×(g·T)[×C], zero-filled, tiles row-major."""
    n, t = tiles.shape[:2]
    g = math.ceil(math.sqrt(n))
    full = np.zeros((g * g, *tiles.shape[1:]), tiles.dtype)
    full[:n] = tiles
    full = full.reshape(g, g, t, t, *tiles.shape[3:]).swapaxes(1, 2)
    return full.reshape(g * t, g * t, *tiles.shape[3:])


def save_overlay(path: Path, tiles: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, title: str) -> None:
    """PNG of the tile mosaic with the predicted mask in colour (and the true mask beside it)."""
    mosaic = tile_mosaic(tiles)
    images = [overlay_labels(mosaic, tile_mosaic(pred), COLOURS)]
    titles = [f"{title}: prediction"]
    if truth is not None:
        images.insert(0, overlay_labels(mosaic, tile_mosaic(truth), COLOURS))
        titles.insert(0, f"{title}: truth")
    with atomic_path(path) as tmp:
        save_image_grid(images, titles, tmp, cols=2)


def open_mask_folder(out: Path, settings: dict[str, Any], providers: Iterable[str], checkpoints: list[Path],
                     overwrite: bool = False) -> None:
    """Create or extend the mask folder ``out`` for masks made with ``settings`` (scheme and tiling).

    Raises:
        DataError: ``out`` holds masks made with other settings (and ``overwrite`` is off).
    """
    meta_file = out / "meta.json"
    old: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    differ = [k for k in settings if old and old.get(k) != settings[k]]
    if differ and not overwrite:
        raise DataError(meta_file, "holds masks made with " + ", ".join(f"{k}={old.get(k)} (now {settings[k]})"
                                                                         for k in differ)
                        + ": use another --out, or --overwrite to replace them")
    if differ:  # --overwrite with other settings: the old masks would mix two tilings
        old = {}
        for stale in (out / "masks").glob("*.npz"):
            stale.unlink()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_json(meta_file, {**settings, "providers": sorted(set(old.get("providers", [])) | set(providers)),
                           "checkpoints": sorted(set(old.get("checkpoints", []))
                                                 | {str(Path(c).resolve()) for c in checkpoints})})


def write_mask_index(out: Path, frame: pd.DataFrame) -> None:
    """index.csv: the slides of ``frame`` (and of the folder's old index) whose mask file exists."""
    done = {p.stem for p in (out / "masks").glob("*.npz")}
    known = pd.concat([MaskFolder(out).index, frame[["image_id", "data_provider"]]]).drop_duplicates("image_id")
    write_csv(out / "index.csv", known[known["image_id"].isin(done)].reset_index(drop=True))


def save_masks(out: Path, image_id: str, labels: np.ndarray) -> None:
    """Write one slide's mask tiles atomically (a killed run never leaves a half file)."""
    with atomic_path(out / "masks" / f"{image_id}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, masks=labels)
