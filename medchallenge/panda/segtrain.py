"""Training the tile U-Net (``panda train --model unet``) on (tile, mask tile) pairs of the tile cache.

What goes into the loss: only tiles that carry tissue (ranks below the slide's ``n_tissue``; white
padding and filler tiles never), with labels mapped to the chosen scheme. Background (label 0)
does not dominate: the Dice term averages the foreground classes only, and the cross-entropy is
weighted by inverse square-root class frequency (measured on the training tiles, normalised so an
average pixel weighs 1). Slides without a mask are skipped and counted in the log.

Batching (``--batching``): ``slide`` (the report's collate trick: a slide's tissue tiles form the
batch, ``--batch-size`` slides at a time) or ``shuffle`` (tiles shuffled across all slides,
``--batch-size`` tiles; read through memory maps so a tile costs only its own bytes).
The best checkpoint is chosen by the mean foreground Dice on the validation slides.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from medchallenge.core import console
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.inference import segment_batches
from medchallenge.core.losses import soft_dice_loss
from medchallenge.core.preview import truth_and_prediction
from medchallenge.panda.augment import augment_stack
from medchallenge.panda.labels import check_scheme, class_names, mask_scores, n_classes, to_scheme
from medchallenge.panda.masks import tile_mosaic
from medchallenge.panda.models import MODELS
from medchallenge.panda.tiles import TileCache
from medchallenge.panda.train import PREVIEW_SIDE, PREVIEWS, split_slides

SEG_LOSSES = ("dice", "dice-ce", "ce")
BATCHING = ("slide", "shuffle")


@dataclass
class SegOptions:
    """The U-Net's options (saved in config.json and the checkpoint)."""

    cache: Path
    provider: str = "both"
    scheme: str = "unified"
    loss: str = "dice-ce"
    batching: str = "slide"
    depth: int = 3
    width: int = 32
    val_fraction: float = 0.2
    groups: Path | None = None


class _MappedSlides:
    """Memory-mapped slide arrays, the most recent ``size`` slides kept open (bounded file handles)."""

    def __init__(self, cache: TileCache, size: int = 128) -> None:
        self.cache = cache
        self.size = size
        self.open: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def __call__(self, image_id: str) -> dict[str, np.ndarray]:
        if image_id in self.open:
            self.open.move_to_end(image_id)
        else:
            self.open[image_id] = self.cache.mapped(image_id)
            if len(self.open) > self.size:
                self.open.popitem(last=False)
        return self.open[image_id]


class SegTileDataset(Dataset):
    """(tile, mask) pairs of tissue tiles, per slide or per tile.

    ``per_slide``: item i → (K×3×T×T uint8, K×T×T int64), slide i's K tissue tiles;
    otherwise item i → (3×T×T uint8, T×T int64), the i-th tissue tile over all slides.
    """

    def __init__(self, cache: TileCache, frame: pd.DataFrame, scheme: str, per_slide: bool, augment: bool) -> None:
        self.cache = cache
        self.ids = frame["image_id"].tolist()
        self.providers = frame["data_provider"].tolist()
        self.n_tissue = frame["n_tissue"].astype(int).tolist()
        self.scheme = scheme
        self.per_slide = per_slide
        self.augment = augment
        self.items = [(s, None) for s in range(len(self.ids))] if per_slide else \
            [(s, r) for s, n in enumerate(self.n_tissue) for r in range(n)]
        self.mapped = _MappedSlides(cache)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, rank = self.items[i]
        arrays = self.mapped(self.ids[s])
        if "masks" not in arrays:
            raise DataError(self.cache.slide_file(self.ids[s]), "no mask tiles (index.csv says it has them)")
        keep = slice(0, self.n_tissue[s]) if rank is None else slice(rank, rank + 1)
        tiles = np.array(arrays["tiles"][keep])  # a writable copy of just these tiles
        masks = to_scheme(np.array(arrays["masks"][keep]), self.providers[s], self.scheme)
        if self.augment:  # flips/transposes of tile and mask together
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            both = augment_stack(np.concatenate([tiles, masks[..., None]], axis=-1), rng, grid=False)
            tiles, masks = both[..., :3], both[..., 3]
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.ascontiguousarray(masks)).long()
        return (x, y) if rank is None else (x[0], y[0])


def cat_slides(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for slide batching: the slides' tiles concatenated into one batch of tiles."""
    return torch.cat([b[0] for b in batch]), torch.cat([b[1] for b in batch])


def class_weights(dataset: SegTileDataset, num_classes: int, max_slides: int = 200, seed: int = 0) -> np.ndarray:
    """CE weights ``f_c^-1/2``, normalised so Σ f_c·w_c = 1, from up to ``max_slides`` training slides.

    A class never seen gets the largest weight of the seen ones.
    """
    rng = np.random.default_rng(seed)
    slides = rng.permutation(len(dataset.ids))[:max_slides]
    counts = np.zeros(num_classes, np.float64)
    for s in slides:
        arrays = dataset.mapped(dataset.ids[s])
        masks = to_scheme(np.asarray(arrays["masks"][: dataset.n_tissue[s]]), dataset.providers[s], dataset.scheme)
        counts += np.bincount(masks.ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(1.0, counts.sum())
    seen = freq > 0
    weights = np.zeros(num_classes)
    weights[seen] = freq[seen] ** -0.5
    weights[~seen] = weights[seen].max() if seen.any() else 1.0
    norm = float((freq * weights).sum())
    return weights / (norm if norm > 0 else 1.0)


def segmentation_loss(name: str, logits: torch.Tensor, target: torch.Tensor,
                      weight: torch.Tensor | None) -> torch.Tensor:
    """``dice`` (mean foreground soft Dice), ``ce`` (class-weighted cross-entropy) or ``dice-ce`` (their sum)."""
    if name == "dice":
        return soft_dice_loss(logits, target)
    ce = F.cross_entropy(logits.float(), target, weight=weight)
    return ce if name == "ce" else ce + soft_dice_loss(logits, target)


class PandaSegTrainer(Trainer):
    """The tile U-Net; best checkpoint by mean foreground Dice on the validation slides."""

    challenge = "panda"
    monitor = "dice"
    registry = MODELS

    def __init__(self, config: TrainConfig, options: SegOptions) -> None:
        super().__init__(config, options)
        self.options = options
        self.providers = check_scheme(options.scheme, options.provider)
        if options.loss not in SEG_LOSSES:
            raise OptionError(f"--loss {options.loss}: expected one of {', '.join(SEG_LOSSES)}")
        if options.batching not in BATCHING:
            raise OptionError(f"--batching {options.batching}: expected one of {', '.join(BATCHING)}")
        self.cache = TileCache(options.cache)
        index = self.cache.index
        index = index[index["data_provider"].isin(self.providers)]
        masked = set(self.cache.with_masks())
        if not masked:
            raise DataError(options.cache, "no slide has mask tiles: a U-Net needs the train split tiled with its"
                                           " train_label_masks/ (medchallenge panda tile --split train)")
        without = index[~index["image_id"].isin(masked)]
        if len(without):
            console.log(f"skipped {len(without)} slide(s) without a mask (no train_label_masks file),"
                        f" e.g. {without['image_id'].iloc[0]}")
        usable = index[index["image_id"].isin(masked) & (index["n_tissue"].astype(int) > 0)].reset_index(drop=True)
        if len(usable) < 2:
            raise DataError(options.cache, f"only {len(usable)} {'/'.join(self.providers)} slide(s) with mask and"
                                           " tissue tiles: nothing to train a U-Net on")
        self.num_classes = n_classes(options.scheme, self.providers[0])
        train_idx, val_idx = split_slides(self, usable, options.val_fraction, options.groups)
        self.train_frame = usable.iloc[train_idx].reset_index(drop=True)
        self.val_frame = usable.iloc[val_idx].reset_index(drop=True)
        self._train = SegTileDataset(self.cache, self.train_frame, options.scheme,
                                     per_slide=options.batching == "slide", augment=True)
        self.weights = class_weights(self._train, self.num_classes, seed=config.seed)
        self._weight_tensor: torch.Tensor | None = None
        names = class_names(options.scheme, self.providers[0])
        console.log(
            f"U-Net on {len(self.train_frame)} training / {len(self.val_frame)} validation slides"
            f" ({'/'.join(self.providers)}, {options.scheme} labels: {', '.join(names)}); {options.loss} loss,"
            f" CE weights {', '.join(f'{w:.2f}' for w in self.weights)}, {options.batching} batching"
        )

    def train_dataset(self) -> Dataset:
        return self._train

    def train_loader(self) -> Any:
        collate = cat_slides if self.options.batching == "slide" else None
        return self.loaders.train(self._train, self.config.batch_size, collate_fn=collate)

    def model_spec(self) -> dict[str, Any]:
        return {"name": "unet", "kwargs": {"num_classes": self.num_classes, "depth": self.options.depth,
                                           "width": self.options.width}}

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = self.cache.meta
        return {
            "tiling": {k: meta.get(k) for k in ("level", "tile_size", "n_tiles", "mode")},
            "segmentation": {"scheme": self.options.scheme, "providers": list(self.providers),
                             "num_classes": self.num_classes,
                             "class_names": list(class_names(self.options.scheme, self.providers[0]))},
            "input": "uint8 tiles B×3×T×T; model computes 1 - x/255",
            "val_ids": self.val_frame["image_id"].tolist(),
        }

    def _weight(self, device: torch.device) -> torch.Tensor:
        """The CE class weights as a tensor on ``device`` (made once)."""
        if self._weight_tensor is None or self._weight_tensor.device != device:
            self._weight_tensor = torch.as_tensor(self.weights, dtype=torch.float32, device=device)
        return self._weight_tensor

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        tiles, masks = batch
        return segmentation_loss(self.options.loss, model(tiles), masks, self._weight(tiles.device))

    def _confusions(self, model: nn.Module) -> list[np.ndarray]:
        """Per validation slide, the K×K pixel confusion (rows truth, columns prediction) of its tissue tiles."""
        dataset = SegTileDataset(self.cache, self.val_frame, self.options.scheme, per_slide=True, augment=False)
        k = self.num_classes
        matrices = []
        for s in console.track(range(len(dataset)), "validation", total=len(dataset)):
            tiles, masks = dataset[s]
            labels = segment_batches(model, tiles.numpy(), self.device, batch_size=self.config.batch_size,
                                     dtype=self.amp_dtype)
            matrices.append(np.bincount(masks.numpy().ravel() * k + labels.ravel(), minlength=k * k).reshape(k, k))
        return matrices

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Pixel confusion over the validation slides' tissue tiles, labels through ``segment_batches``.

        No validation loss: the best checkpoint is chosen by Dice, and a loss would need a second
        pass keeping the logits.
        """
        k = self.num_classes
        matrix = np.sum(self._confusions(model), axis=0)
        scores = mask_scores(matrix, self.options.scheme, self.providers[0])
        row = {
            "dice": float(np.nan_to_num(scores["mean_dice"])),
            "tumour_dice": float(np.nan_to_num(scores["tumour_dice"])),
            "pixel_accuracy": scores["pixel_accuracy"],
        }
        for c in range(1, k):
            row[f"dice_{c}"] = float(scores["dice"][c])
        return row

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """One row per validation slide: id, provider, isup, scheme, the slide's own mean foreground and
        tumour Dice, and its pixel confusion as ``px_<truth>_<prediction>`` counts — what ``panda cv``
        sums over the folds to score the pooled pixels as ``evaluate --masks`` does."""
        rows = []
        scheme = self.options.scheme
        frame = self.val_frame
        for image_id, provider, isup, matrix in zip(frame["image_id"], frame["data_provider"], frame["isup_grade"],
                                                    self._confusions(model)):
            scores = mask_scores(matrix, scheme, provider)
            row: dict[str, Any] = {"id": image_id, "provider": provider,
                                   "isup": None if pd.isna(isup) else int(isup), "scheme": scheme,
                                   "dice": scores["mean_dice"], "tumour_dice": scores["tumour_dice"]}
            row.update({f"px_{t}_{q}": int(matrix[t, q]) for t in range(len(matrix)) for q in range(len(matrix))})
            rows.append(row)
        return rows

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """Truth | prediction over the tissue-tile mosaic of the first validation slides with foreground."""
        dataset = SegTileDataset(self.cache, self.val_frame, self.options.scheme, per_slide=True, augment=False)
        images: dict[str, Any] = {}
        for s in range(len(dataset)):
            if len(images) == PREVIEWS:
                break
            tiles, masks = dataset[s]
            if not (masks > 0).any():
                continue
            labels = segment_batches(model, tiles.numpy(), self.device, batch_size=self.config.batch_size,
                                     dtype=self.amp_dtype)
            image = tile_mosaic(tiles.permute(0, 2, 3, 1).numpy())
            step = max(1, image.shape[0] // PREVIEW_SIDE)
            images[dataset.ids[s][:8]] = truth_and_prediction(
                image[::step, ::step], tile_mosaic(masks.numpy().astype(np.uint8))[::step, ::step],
                tile_mosaic(labels)[::step, ::step])
        return images
