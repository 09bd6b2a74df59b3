"""Tile segmentation for PANDA: label schemes, the tile U-Net, mask folders, inference, overlays.

Label schemes (``--label-scheme``):

- ``provider``: each provider's own labels, one model per provider (the report's way).
  Radboud 0 background, 1 stroma, 2 benign epithelium, 3/4/5 Gleason 3/4/5; Karolinska 0
  background, 1 benign tissue, 2 cancer.
- ``unified``: one map for both, 0 background, 1 benign (Radboud 1, 2; Karolinska 1), 2 cancer
  (Radboud 3, 4, 5; Karolinska 2).

The classifier's mask channel is ``label × 255 / (K − 1)`` as uint8, K the scheme's classes for
the slide's provider: ×255/5 for Radboud and ×255/2 for Karolinska (the report's scaling), ×255/2
for the unified scheme — so the mask sits in the images' range.

A mask folder (written by ``panda predict`` with a U-Net checkpoint)::

    meta.json        scheme, providers, num_classes, tile_size, n_tiles, checkpoints
    index.csv        image_id, data_provider
    masks/{id}.npz   masks (N×T×T uint8 labels in the scheme)
    overlays/{id}.png  tile mosaic with the mask in colour (truth beside it when known)
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, autocast
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import atomic_path, write_csv, write_json
from medchallenge.core.metrics import dice_per_class
from medchallenge.core.plots import overlay_labels, save_image_grid
from medchallenge.core.unet import UNet2d, pad_to_multiple
from medchallenge.panda.data import MASK_CLASSES, PROVIDERS

SCHEMES = ("provider", "unified")
UNIFIED_FROM = {"radboud": np.array([0, 1, 1, 2, 2, 2], np.uint8), "karolinska": np.array([0, 1, 2], np.uint8)}
CLASS_NAMES = {
    "radboud": ("background", "stroma", "benign epithelium", "Gleason 3", "Gleason 4", "Gleason 5"),
    "karolinska": ("background", "benign", "cancer"),
    "unified": ("background", "benign", "cancer"),
}
COLOURS = {1: (60, 170, 60), 2: (40, 110, 230), 3: (250, 200, 0), 4: (250, 120, 0), 5: (220, 20, 20)}
"""Overlay colour per label (3 classes: 1 benign green, 2 cancer blue)."""


def check_scheme(scheme: str, provider: str) -> tuple[str, ...]:
    """Validate ``--label-scheme``/``--provider``; returns the providers covered."""
    if scheme not in SCHEMES:
        raise OptionError(f"--label-scheme {scheme}: expected one of {', '.join(SCHEMES)}")
    if provider not in (*PROVIDERS, "both"):
        raise OptionError(f"--provider {provider}: expected radboud, karolinska or both")
    if scheme == "provider" and provider == "both":
        raise OptionError("--label-scheme provider trains one model per provider: give --provider radboud or"
                          " karolinska, or use --label-scheme unified for one model on both")
    return PROVIDERS if provider == "both" else (provider,)


def n_classes(scheme: str, provider: str) -> int:
    """Classes of ``provider``'s masks in ``scheme`` (Radboud 6 / Karolinska 3 / unified 3)."""
    return 3 if scheme == "unified" else MASK_CLASSES[provider]


def class_names(scheme: str, provider: str) -> tuple[str, ...]:
    return CLASS_NAMES["unified" if scheme == "unified" else provider]


def tumour_labels(scheme: str, provider: str) -> tuple[int, ...]:
    """The labels that mean cancer: Radboud 3–5 in its own scheme, else 2."""
    return (3, 4, 5) if scheme == "provider" and provider == "radboud" else (2,)


def to_scheme(masks: np.ndarray, provider: str, scheme: str) -> np.ndarray:
    """Provider labels (any shape, uint8) → labels of ``scheme``."""
    if scheme == "provider":
        return masks
    return UNIFIED_FROM[provider][masks]


def channel_lut(scheme: str, provider: str) -> np.ndarray:
    """Label → mask-channel value, ``round(label · 255 / (K − 1))`` (K uint8 values)."""
    k = n_classes(scheme, provider)
    return np.round(np.arange(k) * 255.0 / (k - 1)).astype(np.uint8)


def mask_channel(labels: np.ndarray, provider: str, scheme: str) -> np.ndarray:
    """Labels in ``scheme`` → the classifier's uint8 mask channel."""
    return channel_lut(scheme, provider)[labels]


def mask_scores(matrix: np.ndarray, scheme: str, provider: str) -> dict[str, Any]:
    """Scores of a K×K pixel confusion matrix (rows truth, columns prediction).

    Returns ``pixels``, ``pixel_accuracy``, ``dice`` (per class, NaN for a class in neither),
    ``mean_dice`` (over the foreground classes, NaN when none is scored), ``tumour_dice`` (the
    tumour labels merged into one class, NaN when absent from both) and ``tumour_pixels``.
    """
    matrix = np.asarray(matrix)
    dice = dice_per_class(matrix)
    tumour = list(tumour_labels(scheme, provider))
    found = 2 * matrix[np.ix_(tumour, tumour)].sum()
    size = matrix[tumour].sum() + matrix[:, tumour].sum()
    foreground = dice[1:]
    return {
        "pixels": int(matrix.sum()),
        "pixel_accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "dice": dice,
        "mean_dice": float(np.nanmean(foreground)) if np.isfinite(foreground).any() else float("nan"),
        "tumour_dice": float(found / size) if size else float("nan"),
        "tumour_pixels": int(matrix[tumour].sum()),
    }


# --------------------------------------------------------------------------- the model
class PandaUNet(nn.Module):
    """The tile U-Net: uint8 tiles B×3×T×T → logits B×K×T×T.

    The report's U-Net: the course's network without its 4th down/up block (``depth=3``).
    Tiles are inverted and scaled like the classifier's (``1 - x/255``, white → 0) and padded to
    a multiple of ``2**depth`` when needed.
    """

    def __init__(self, num_classes: int, depth: int = 3, width: int = 32) -> None:
        super().__init__()
        self.depth = depth
        self.unet = UNet2d(3, num_classes, depth=depth, width=width)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        x = 1.0 - tiles.float() / 255.0
        x, (rows, cols) = pad_to_multiple(x, 2**self.depth)
        return self.unet(x)[..., rows, cols]


def build_unet(spec: dict[str, Any]) -> PandaUNet:
    return PandaUNet(**spec["kwargs"])


def load_unet(path: Path, device: torch.device) -> tuple[PandaUNet, dict[str, Any]]:
    """A U-Net checkpoint on ``device`` (eval mode) and its ``meta`` (``segmentation``: scheme, providers)."""
    state = load_checkpoint(path, challenge="panda", models=["unet"])
    model = build_unet(state["model"])
    load_state_dict_checked(model, state["state_dict"], path)
    if not state["meta"].get("segmentation"):
        raise DataError(path, "U-Net checkpoint without its label scheme (meta.segmentation)")
    return model.to(device).eval(), state["meta"]


@torch.inference_mode()
def segment_tiles(model: nn.Module, tiles: torch.Tensor, dtype: torch.dtype | None, chunk: int = 64) -> torch.Tensor:
    """uint8 tiles M×3×T×T (on the model's device) → labels M×T×T uint8 (argmax), ``chunk`` tiles at a time."""
    out = []
    for start in range(0, tiles.shape[0], chunk):
        with autocast(tiles.device, dtype):
            logits = model(tiles[start:start + chunk])
        out.append(logits.argmax(dim=1).to(torch.uint8))
    if not out:
        return torch.zeros(0, *tiles.shape[-2:], dtype=torch.uint8, device=tiles.device)
    return torch.cat(out)


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
        self.by_provider: dict[str, tuple[PandaUNet, Path]] = {}
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

    def channel(self, tiles: torch.Tensor, provider: str) -> torch.Tensor:
        """uint8 tiles M×3×T×T on the device → the mask channel M×1×T×T uint8."""
        model, _ = self.by_provider[provider]
        labels = segment_tiles(model, tiles, self.dtype)
        lut = torch.from_numpy(channel_lut(self.scheme, provider)).to(tiles.device)
        return lut[labels.long()].unsqueeze(1)


# --------------------------------------------------------------------------- mask folders
class MaskFolder:
    """A folder of predicted mask tiles (see the module docstring)."""

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


def predict_masks(
    checkpoint: Path,
    out: Path,
    tiles: Path | None = None,
    data: Path | None = None,
    n_overlays: int = 4,
    device: str = "auto",
    batch_size: int = 2,
    workers: int = 0,
) -> Path:
    """Segment every slide of the U-Net's providers into the mask folder ``out``.

    Slides come from a tile cache (``tiles``; truth masks, when there, go beside the overlay) or
    are tiled on the fly from ``data/test.csv`` with the U-Net's tiling. Reruns skip finished
    slides; a second U-Net (the other provider) may add its slides to the same folder.

    Raises:
        DataError: a checkpoint that is not a PANDA U-Net, a folder holding another scheme or tiling.
    """
    from torch.utils.data import DataLoader

    from medchallenge.core.device import resolve_device
    from medchallenge.panda.data import read_test_csv
    from medchallenge.panda.predict import SlideTileDataset
    from medchallenge.panda.tiles import TileCache

    dev = resolve_device(device)
    model, unet_meta = load_unet(checkpoint, dev)
    seg = unet_meta["segmentation"]
    if tiles is not None:
        cache = TileCache(tiles)
        frame = cache.index[["image_id", "data_provider"]]
        tiling = {k: cache.meta[k] for k in ("level", "tile_size", "n_tiles", "mode")}
    else:
        cache = None
        if data is None:
            raise OptionError("give --tiles CACHE or --data FOLDER (test.csv) to segment")
        frame = read_test_csv(Path(data) / "test.csv")[["image_id", "data_provider"]]
        tiling = dict(unet_meta["tiling"])
    frame = frame[frame["data_provider"].isin(seg["providers"])].reset_index(drop=True)
    meta = {"scheme": seg["scheme"], "tile_size": int(tiling["tile_size"]), "n_tiles": int(tiling["n_tiles"]),
            "level": int(tiling["level"])}
    meta_file = out / "meta.json"
    old: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    differ = [k for k in meta if old and old.get(k) != meta[k]]
    if differ:
        raise DataError(meta_file, "holds masks made with " + ", ".join(f"{k}={old.get(k)} (now {meta[k]})"
                                                                         for k in differ) + ": use another --out")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_json(meta_file, {**meta, "providers": sorted(set(old.get("providers", [])) | set(seg["providers"])),
                           "checkpoints": sorted(set(old.get("checkpoints", [])) | {str(Path(checkpoint).resolve())})})
    todo = [i for i, image_id in enumerate(frame["image_id"]) if not (out / "masks" / f"{image_id}.npz").is_file()]
    ids = frame["image_id"].tolist()
    console.log(f"segmenting {len(todo)} of {len(ids)} slide(s) ({', '.join(seg['providers'])}, {seg['scheme']} labels)"
                f" → {out}")
    dataset = SlideTileDataset([ids[i] for i in todo], tiling, [int(tiling.get("mode", 0))],
                               data=None if data is None else Path(data), cache=cache)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = amp_dtype(dev)
    overlays = 0
    for views, index, _ in console.track(loader, "segment", total=len(loader)):
        b, _, n = views.shape[:3]
        stack = views[:, 0].reshape(b * n, *views.shape[3:]).to(dev, non_blocking=True)
        labels = segment_tiles(model, stack, dtype).reshape(b, n, *views.shape[-2:]).cpu().numpy()
        for j, k in enumerate(index.tolist()):
            image_id = dataset.ids[k]
            with atomic_path(out / "masks" / f"{image_id}.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, masks=labels[j])
            if overlays < n_overlays:
                provider = frame["data_provider"].iloc[todo[k]]
                truth = None
                if cache is not None:
                    slide = cache.load(image_id)
                    truth = None if slide.masks is None else to_scheme(slide.masks, provider, seg["scheme"])
                rgb = views[j, 0].permute(0, 2, 3, 1).numpy()
                save_overlay(out / "overlays" / f"{image_id}.png", rgb, labels[j], truth, f"{image_id[:8]} ({provider})")
                overlays += 1
    done = sorted(p.stem for p in (out / "masks").glob("*.npz"))
    known = pd.concat([MaskFolder(out).index, frame]).drop_duplicates("image_id")
    write_csv(out / "index.csv", known[known["image_id"].isin(done)].reset_index(drop=True))
    console.log(f"wrote mask tiles of {len(todo)} slide(s) and {overlays} overlay(s) to {out}")
    return out
