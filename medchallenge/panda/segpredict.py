"""U-Net inference: mask tiles of slides (a mask folder), and the classifier's mask channel at predict time.

Every forward pass goes through :func:`medchallenge.core.inference.segment_batches` (chunks of
tiles, autocast, argmax on the device).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_model, load_models
from medchallenge.core.device import amp_dtype
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.inference import segment_batches
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.parts import select_part
from medchallenge.panda.labels import channel_lut, to_scheme
from medchallenge.panda.masks import open_mask_folder, save_masks, save_overlay, write_mask_index
from medchallenge.panda.models import MODELS
from medchallenge.panda.slides import SlideTileDataset
from medchallenge.panda.tiles import TileCache

TILE_CHUNK = 64
"""Tiles per forward pass: 64 tiles of 256² fit a small GPU at depth 3, width 32."""


def load_unet(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A U-Net checkpoint on ``device`` (eval mode) and its ``meta`` (``segmentation``: scheme, providers)."""
    model, state = load_model(path, MODELS, challenge="panda", models=["unet"], map_location=device)
    if not state["meta"].get("segmentation"):
        raise DataError(path, "U-Net checkpoint without its label scheme (meta.segmentation)")
    return model, state["meta"]


def segment_tiles(model: nn.Module | list[nn.Module], tiles: np.ndarray, device: torch.device,
                  dtype: torch.dtype | None, chunk: int = TILE_CHUNK, flips: bool = False) -> np.ndarray:
    """uint8 tiles M×3×T×T → labels M×T×T uint8 (argmax), ``chunk`` tiles at a time.

    Several models (an ensemble) average their softmax; ``flips`` also averages the three mirrored
    views (``core.inference.segment_batches``).
    """
    return segment_batches(model, tiles, device, batch_size=chunk, dtype=dtype, flips=flips)


def load_unets(paths: list[Path], device: torch.device) -> tuple[list[nn.Module], dict[str, Any]]:
    """U-Nets of one ensemble on ``device`` (eval mode) and the first one's meta; the members must share
    the label scheme, providers and tiling."""
    loaded = load_models(paths, MODELS, challenge="panda", models=["unet"], map_location=device,
                         same_meta=("segmentation", "tiling"))
    meta = loaded[0][1]["meta"]
    if not meta.get("segmentation"):
        raise DataError(paths[0], "U-Net checkpoint without its label scheme (meta.segmentation)")
    return [model.eval() for model, _ in loaded], meta


class MaskModels:
    """One or more U-Nets covering providers, for the mask channel at predict time.

    Raises:
        DataError: a U-Net of another label scheme than ``scheme``, two U-Nets for one provider,
            or none for a provider that is asked for.
    """

    def __init__(self, paths: Sequence[Path], scheme: str, device: torch.device, source: str) -> None:
        self.device = device
        self.scheme = scheme
        self.dtype = amp_dtype(device)
        self.by_provider: dict[str, tuple[nn.Module, Path]] = {}
        for path in paths:
            model, meta = load_unet(path, device)
            seg = meta["segmentation"]
            if seg["scheme"] != scheme:
                raise DataError(path, f"a U-Net of the '{seg['scheme']}' label scheme, but {source} uses"
                                      f" '{scheme}' masks")
            for provider in seg["providers"]:
                if provider in self.by_provider:
                    raise DataError(path, f"a second U-Net for {provider} (first: {self.by_provider[provider][1]})")
                self.by_provider[provider] = (model, path)

    def check_covers(self, providers: Iterable[str]) -> None:
        missing = sorted(set(providers) - set(self.by_provider))
        if missing:
            given = ", ".join(str(p) for _, p in self.by_provider.values()) or "none"
            raise OptionError(f"no --mask-model U-Net for provider {', '.join(missing)} (given: {given})")

    def channel(self, tiles: np.ndarray, provider: str) -> np.ndarray:
        """uint8 tiles M×3×T×T → the mask channel M×1×T×T uint8."""
        model, _ = self.by_provider[provider]
        labels = segment_tiles(model, tiles, self.device, self.dtype)
        return channel_lut(self.scheme, provider)[labels][:, None]


def _slides_to_segment(cache: TileCache | None, data: Path | None, unet_meta: dict[str, Any]
                       ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(image_id, data_provider) of the U-Net's providers, and the tiling to cut them with."""
    from medchallenge.panda.data import read_test_csv

    if cache is not None:
        frame = cache.index[["image_id", "data_provider"]]
        tiling = {k: cache.meta[k] for k in ("level", "tile_size", "n_tiles", "mode")}
    else:
        if data is None:
            raise OptionError("give --cache CACHE or --data FOLDER (test.csv) to segment")
        frame = read_test_csv(Path(data) / "test.csv")[["image_id", "data_provider"]]
        tiling = dict(unet_meta["tiling"])
    providers = unet_meta["segmentation"]["providers"]
    return frame[frame["data_provider"].isin(providers)].reset_index(drop=True), tiling


def predict_masks(checkpoint: Path | list[Path], out: Path, tiles: Path | None = None, data: Path | None = None,
                  n_overlays: int = 4, device: str = "auto", batch_size: int = 2, workers: int = 0,
                  part: str | None = None, overwrite: bool = False, tta: bool = False) -> Path:
    """Segment every slide of the U-Net's providers into the mask folder ``out``.

    Several checkpoints form an ensemble (softmax averaged); ``tta`` adds the mirrored views.
    Slides come from a tile cache (``tiles``; truth masks, when there, go beside the overlay) or
    are tiled on the fly from ``data/test.csv`` with the U-Net's tiling. ``part`` (K/N) takes
    every N-th slide; reruns skip slides this checkpoint made with the same tiling (``OUT/.manifest``)
    unless ``overwrite``, and redo those another checkpoint made; a second U-Net (the other
    provider) may add its slides to the same folder.

    Raises:
        DataError: a checkpoint that is not a PANDA U-Net, a folder holding another scheme or tiling.
    """
    from medchallenge.core.device import resolve_device

    dev = resolve_device(device)
    checkpoints = expand_checkpoints([checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint)
    model, unet_meta = load_unets(checkpoints, dev)
    seg = unet_meta["segmentation"]
    cache = TileCache(tiles) if tiles is not None else None
    frame, tiling = _slides_to_segment(cache, data, unet_meta)
    settings = {"scheme": seg["scheme"], "tile_size": int(tiling["tile_size"]), "n_tiles": int(tiling["n_tiles"]),
                "level": int(tiling["level"])}
    open_mask_folder(out, settings, seg["providers"], checkpoints, overwrite)
    mine = select_part(list(range(len(frame))), part)
    manifest = PredictionManifest(out, checkpoints, {
        "tiling": {k: int(tiling[k]) for k in ("level", "tile_size", "n_tiles", "mode")},
        "source": "cache" if cache is not None else "slides", "tta": tta})
    names = [frame["image_id"].iloc[i] for i in mine]
    pending = manifest.pending(names, [(out / "masks" / f"{n}.npz").is_file() for n in names], overwrite)
    todo = [mine[k] for k in pending]
    console.log(f"segmenting {len(todo)} of {len(frame)} slide(s) ({', '.join(seg['providers'])}, {seg['scheme']}"
                f" labels{', part ' + part if part else ''}) → {out}")
    dataset = SlideTileDataset([frame["image_id"].iloc[i] for i in todo], tiling, [int(tiling.get("mode", 0))],
                               data=None if data is None else Path(data), cache=cache)
    overlays = _segment_dataset(model, dataset, frame.iloc[todo].reset_index(drop=True), out, cache, dev,
                                seg["scheme"], n_overlays, batch_size, workers, manifest, tta)
    write_mask_index(out, frame)
    console.log(f"wrote mask tiles of {len(todo)} slide(s) and {overlays} overlay(s) to {out}")
    return out


def _segment_dataset(model: list[nn.Module], dataset: SlideTileDataset, frame: pd.DataFrame, out: Path,
                     cache: TileCache | None, dev: torch.device, scheme: str, n_overlays: int,
                     batch_size: int, workers: int, manifest: PredictionManifest, tta: bool) -> int:
    """Segment each slide of ``dataset`` (row k of ``frame``) into ``out``; returns the overlays drawn."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = amp_dtype(dev)
    overlays = 0
    for views, index, _ in console.track(loader, "segment", total=len(loader)):
        b, _, n = views.shape[:3]
        stack = views[:, 0].reshape(b * n, *views.shape[3:]).numpy()
        labels = segment_tiles(model, stack, dev, dtype, flips=tta).reshape(b, n, *views.shape[-2:])
        for j, k in enumerate(index.tolist()):
            image_id, provider = dataset.ids[k], frame["data_provider"].iloc[k]
            save_masks(out, image_id, labels[j])
            manifest.record(image_id)
            if overlays < n_overlays:
                truth = None
                if cache is not None:
                    slide = cache.load(image_id)
                    truth = None if slide.masks is None else to_scheme(slide.masks, provider, scheme)
                rgb = views[j, 0].permute(0, 2, 3, 1).numpy()
                save_overlay(out / "overlays" / f"{image_id}.png", rgb, labels[j], truth, f"{image_id[:8]} ({provider})")
                overlays += 1
    return overlays
