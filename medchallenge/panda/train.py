"""Training the PANDA classifier on the tile cache with the shared engine.

A sample is a slide's tile stack (N×C×T×T uint8) and its ISUP grade. Augmentation flips and
transposes each tile, and flips/transposes the whole mosaic (tile positions and tiles together).
The split is stratified by ISUP grade and seeded (``--val-fraction`` or ``--n-folds/--fold``);
the best checkpoint is chosen by validation QWK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from medchallenge.core import console
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import DataError
from medchallenge.core.splits import kfold_split, stratified_split
from medchallenge.panda import encoding as enc
from medchallenge.panda.augment import augment_stack
from medchallenge.panda.metrics import qwk
from medchallenge.panda.models import PandaClassifier
from medchallenge.panda.tiles import TileCache


class TileStackDataset(Dataset):
    """Tile stacks of the given slides from a :class:`TileCache`: (N×C×T×T uint8, grade int64)."""

    def __init__(self, cache: TileCache, image_ids: list[str], grades: list[int], augment: bool, grid: bool) -> None:
        self.cache = cache
        self.image_ids = image_ids
        self.grades = grades
        self.augment = augment
        self.grid = grid

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = self.cache.load(self.image_ids[i]).tiles
        if self.augment:
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            tiles = augment_stack(tiles, rng, self.grid)
        stack = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        return stack, torch.tensor(self.grades[i], dtype=torch.int64)


@dataclass
class PandaOptions:
    """The PANDA-specific training options (saved in config.json and the checkpoint)."""

    tiles: Path
    arch: str = "efficientnet-b0"
    encoding: str = "ordinal"
    layout: str = "mosaic"
    pretrained: bool = True
    weights: Path | None = None
    val_fraction: float = 0.2
    n_folds: int | None = None
    fold: int = 0


class PandaTrainer(Trainer):
    """ISUP grading from tile stacks; best checkpoint by validation QWK."""

    challenge = "panda"
    monitor = "qwk"

    def __init__(self, config: TrainConfig, options: PandaOptions) -> None:
        config.extra = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()}
        super().__init__(config)
        self.options = options
        self.cache = TileCache(options.tiles)
        labelled = self.cache.index[self.cache.index["isup_grade"].notna()].reset_index(drop=True)
        if len(labelled) < 2:
            raise DataError(options.tiles, f"only {len(labelled)} slide(s) with an ISUP grade: nothing to train on")
        grades = labelled["isup_grade"].astype(int).to_numpy()
        if options.n_folds:
            train_idx, val_idx = kfold_split(grades, options.n_folds, options.fold, config.seed)
        else:
            train_idx, val_idx = stratified_split(grades, options.val_fraction, config.seed)
        self.train_frame = labelled.iloc[train_idx].reset_index(drop=True)
        self.val_frame = labelled.iloc[val_idx].reset_index(drop=True)
        enc.check_encoding(options.encoding)
        console.log(
            f"{len(self.train_frame)} training / {len(self.val_frame)} validation slides from {options.tiles}"
            f" ({self.cache.meta.get('n_tiles')} tiles of {self.cache.meta.get('tile_size')} px)"
        )

    def _dataset(self, frame: pd.DataFrame, augment: bool) -> TileStackDataset:
        return TileStackDataset(
            self.cache,
            frame["image_id"].tolist(),
            frame["isup_grade"].astype(int).tolist(),
            augment=augment,
            grid=self.options.layout == "mosaic",
        )

    def train_dataset(self) -> Dataset:
        return self._dataset(self.train_frame, augment=True)

    def build_model(self) -> nn.Module:
        o = self.options
        return PandaClassifier(o.arch, o.encoding, o.layout, in_channels=3, pretrained=o.pretrained, weights=o.weights)

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return {"name": "classifier", "kwargs": {"arch": o.arch, "encoding": o.encoding, "layout": o.layout,
                                                 "in_channels": 3}}

    def checkpoint_meta(self) -> dict[str, Any]:
        meta = self.cache.meta
        return {
            "tiling": {k: meta.get(k) for k in ("level", "tile_size", "n_tiles", "mode")},
            "grades": list(range(enc.N_GRADES)),
            "input": "uint8 tiles N×C×T×T; model computes 1 - x/255",
            "val_ids": self.val_frame["image_id"].tolist(),
        }

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        tiles, grades = batch
        return enc.loss(self.options.encoding, model(tiles), grades)

    def validate(self, model: nn.Module) -> dict[str, float]:
        loader = self.make_loader(self._dataset(self.val_frame, augment=False), shuffle=False, distributed=False)
        losses, preds, truths = [], [], []
        for tiles, grades in loader:
            tiles, grades = self.to_device((tiles, grades))
            with self.autocast():
                logits = model(tiles)
            losses.append(float(enc.loss(self.options.encoding, logits, grades)) * len(grades))
            preds.append(enc.decode(self.options.encoding, enc.scores(self.options.encoding, logits)).cpu())
            truths.append(grades.cpu())
        y_pred = torch.cat(preds).numpy()
        y_true = torch.cat(truths).numpy()
        return {
            "val_loss": sum(losses) / max(1, len(y_true)),
            "qwk": qwk(y_true, y_pred),
            "accuracy": float(np.mean(y_pred == y_true)),
        }
