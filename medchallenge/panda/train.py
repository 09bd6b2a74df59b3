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
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import read_csv
from medchallenge.panda import encoding as enc
from medchallenge.panda.augment import augment_stack
from medchallenge.panda.bnstats import recompute_bn_stats
from medchallenge.panda.cutoffs import FIXED, apply_cutoffs, tune_cutoffs
from medchallenge.panda.data import check_image_ids, read_train_csv
from medchallenge.panda.labels import SCHEMES, mask_channel, to_scheme
from medchallenge.panda.masks import MaskFolder, tile_mosaic
from medchallenge.panda.metrics import qwk
from medchallenge.panda.models import MODELS, PandaClassifier, load_pretrained
from medchallenge.panda.tiles import SlideTiles, TileCache

PREVIEWS = 3
"""Validation slides shown in TensorBoard (``--tensorboard``) after each validation."""
PREVIEW_SIDE = 512
"""Preview mosaics are subsampled to about this many px a side."""
PRECISE_BN_SLIDES = 256
"""Training slides whose forward pass re-estimates the BatchNorm statistics before each validation."""


class TileStackDataset(Dataset):
    """Tile stacks of the given slides from a :class:`TileCache`: (N×C×T×T uint8, grade int64).

    With ``masks`` (a :class:`SlideMasks`), the mask channel is appended (C = 4) before the
    augmentation, so tiles and masks are flipped together.
    """

    def __init__(self, cache: TileCache, frame: pd.DataFrame, augment: bool, grid: bool,
                 masks: SlideMasks | None = None) -> None:
        self.cache = cache
        self.image_ids = frame["image_id"].tolist()
        self.providers = frame["data_provider"].tolist()
        self.grades = frame["isup_grade"].astype(int).tolist()
        self.augment = augment
        self.grid = grid
        self.masks = masks

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        slide = self.cache.load(self.image_ids[i])
        tiles = slide.tiles
        if self.masks is not None:
            channel = self.masks.channel(self.image_ids[i], self.providers[i], slide)
            tiles = np.concatenate([tiles, channel[..., None]], axis=-1)
        if self.augment:
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            tiles = augment_stack(tiles, rng, self.grid)
        stack = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        return stack, torch.tensor(self.grades[i], dtype=torch.int64)


class SlideMasks:
    """The classifier's mask channel at training time: the cache's true masks or a predicted mask folder.

    ``source`` is ``"truth"`` or a folder written by ``panda predict`` with a U-Net; ``scheme`` is
    the label scheme (a folder's own scheme must agree).
    """

    def __init__(self, source: str, scheme: str | None, cache: TileCache) -> None:
        self.source = source
        self.folder = None if source == "truth" else MaskFolder(source)
        folder_scheme = None if self.folder is None else self.folder.scheme
        if scheme is not None and folder_scheme is not None and scheme != folder_scheme:
            raise DataError(Path(source) / "meta.json", f"masks in the '{folder_scheme}' label scheme,"
                                                        f" --label-scheme {scheme} asked for")
        self.scheme = scheme or folder_scheme or "provider"
        if self.scheme not in SCHEMES:
            raise OptionError(f"--label-scheme {self.scheme}: expected one of {', '.join(SCHEMES)}")
        self.available = set(cache.with_masks()) if self.folder is None else self.folder.ids()
        if self.folder is not None:
            for key in ("tile_size", "n_tiles"):
                if int(self.folder.meta[key]) != int(cache.meta[key]):
                    raise DataError(self.folder.path / "meta.json", f"mask tiles made with {key}={self.folder.meta[key]},"
                                                                    f" the tile cache {cache.path} has {key}={cache.meta[key]}")

    def channel(self, image_id: str, provider: str, slide: SlideTiles) -> np.ndarray:
        """N×T×T uint8 mask channel of one slide (labels scaled ×255/(K−1))."""
        if self.folder is None:
            if slide.masks is None:
                raise DataError(f"slide {image_id}", "no mask tiles in the tile cache")
            labels = to_scheme(slide.masks, provider, self.scheme)
        else:
            labels = self.folder.load(image_id, slide.tiles.shape[:3])
        return mask_channel(labels, provider, self.scheme)

    def describe(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "source": self.source if self.folder is None else str(self.folder.path)}


def read_groups(path: Path) -> dict[str, str]:
    """``--groups FILE``: image_id → group (duplicate slides, serial sections of one patient).

    Raises:
        DataError: a missing file or column, a bad or duplicate image_id, an empty group.
    """
    frame = read_csv(path, required=["image_id", "group"], dtype={"image_id": str, "group": str})
    check_image_ids(frame, path)
    empty = frame["group"].isna().to_numpy()
    if empty.any():
        raise DataError(path, f"row {int(np.flatnonzero(empty)[0]) + 2}: empty group")
    return dict(zip(frame["image_id"], frame["group"]))


def split_slides(trainer: Trainer, frame: pd.DataFrame, val_fraction: float,
                 groups: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation) of ``frame`` through the engine's split (``--n-folds/--fold``, ``--seed``).

    Stratified by ISUP grade (by provider when a grade is unknown); grouped by slide, or by the
    ``--groups`` file's group (a slide it does not list is its own group), so slides of a group
    never straddle training and validation in any fold.
    """
    grades = pd.to_numeric(frame["isup_grade"], errors="coerce") if "isup_grade" in frame else None
    if grades is None or grades.isna().any():
        strata = frame["data_provider"].astype(str).tolist()
    else:
        strata = grades.astype(int).tolist()
    by_group = read_groups(groups) if groups is not None else {}
    names = [by_group.get(i, i) for i in frame["image_id"]]
    train, val = trainer.split_items(names, strata, val_fraction)
    if by_group and trainer._split is not None:  # the engine lists the groups it split; split.json lists slides
        ids = frame["image_id"].tolist()
        trainer._split.update({"train": sorted(ids[i] for i in train), "val": sorted(ids[i] for i in val),
                               "train_groups": sorted({names[i] for i in train}),
                               "val_groups": sorted({names[i] for i in val})})
    return train, val


def relabel(index: pd.DataFrame, labels: Path, cache: Path) -> pd.DataFrame:
    """``--labels FILE`` (a train.csv, e.g. ``panda clean``'s): the cache's slides it lists, with its labels.

    Slides of the cache that the file does not list are left out; provider and ISUP grade come from
    the file (a cleaned or corrected train.csv relabels the cached tiles without re-tiling).

    Raises:
        DataError: the file is not a valid train.csv, or lists a slide the cache does not hold.
    """
    frame = read_train_csv(labels)
    cached = set(index["image_id"])
    missing = [(row, i) for row, i in enumerate(frame["image_id"]) if i not in cached]
    if missing:
        row, image_id = missing[0]
        raise DataError(labels, f"row {row + 2}: slide {image_id} is not in the tile cache {cache}"
                                f" ({len(missing)} such slide(s)): tile it first, or drop its row")
    kept = index.drop(columns=["data_provider", "isup_grade"]).merge(
        frame[["image_id", "data_provider", "isup_grade"]], on="image_id", how="inner")
    return kept[list(index.columns)].reset_index(drop=True)


@dataclass
class PandaOptions:
    """The PANDA-specific training options (saved in config.json and the checkpoint)."""

    cache: Path
    arch: str = "efficientnet-b0"
    encoding: str = "ordinal"
    layout: str = "mosaic"
    pretrained: bool = True
    weights: Path | None = None
    val_fraction: float = 0.2
    groups: Path | None = None
    labels: Path | None = None
    masks: str | None = None
    label_scheme: str | None = None
    grad_checkpoint: bool = False
    precise_bn: bool = True


def _cutoffs_of(row: dict[str, Any] | None) -> list[float] | None:
    """The tuned cut-offs of a validation row (None before any validation)."""
    if not row or "cutoff_1" not in row:
        return None
    return [float(row[f"cutoff_{k + 1}"]) for k in range(len(FIXED))]


class PandaTrainer(Trainer):
    """ISUP grading from tile stacks; best checkpoint by validation QWK."""

    challenge = "panda"
    monitor = "qwk"
    tiebreak = ("val_loss", "min")  # tuned QWK on a few validation slides reaches 1.0 early: then the lower loss
    registry = MODELS

    def __init__(self, config: TrainConfig, options: PandaOptions) -> None:
        super().__init__(config, options)
        self.options = options
        self.cache = TileCache(options.cache)
        index = self.cache.index if options.labels is None else relabel(self.cache.index, options.labels,
                                                                        options.cache)
        labelled = index[index["isup_grade"].notna()].reset_index(drop=True)
        if len(labelled) < 2:
            raise DataError(options.cache, f"only {len(labelled)} slide(s) with an ISUP grade: nothing to train on")
        self.masks = None if options.masks is None else SlideMasks(options.masks, options.label_scheme, self.cache)
        if self.masks is not None:
            if not self.masks.available:
                raise DataError(options.cache if options.masks == "truth" else options.masks,
                                "no slide has mask tiles: the mask channel needs the train split tiled with its"
                                " train_label_masks/, or a mask folder from `panda predict` with a U-Net")
            without = ~labelled["image_id"].isin(self.masks.available)
            if without.any():
                console.log(f"skipped {int(without.sum())} slide(s) without a mask ({options.masks}),"
                            f" e.g. {labelled['image_id'][without].iloc[0]}")
            labelled = labelled[~without].reset_index(drop=True)
            if len(labelled) < 2:
                raise DataError(options.cache, f"only {len(labelled)} slide(s) with both a grade and a mask")
        train_idx, val_idx = split_slides(self, labelled, options.val_fraction, options.groups)
        self.train_frame = labelled.iloc[train_idx].reset_index(drop=True)
        self.val_frame = labelled.iloc[val_idx].reset_index(drop=True)
        enc.check_encoding(options.encoding)
        console.log(
            f"{len(self.train_frame)} training / {len(self.val_frame)} validation slides from {options.cache}"
            f" ({self.cache.meta.get('n_tiles')} tiles of {self.cache.meta.get('tile_size')} px)"
        )

    def _dataset(self, frame: pd.DataFrame, augment: bool) -> TileStackDataset:
        return TileStackDataset(self.cache, frame, augment=augment, grid=self.options.layout == "mosaic",
                                masks=self.masks)

    def train_dataset(self) -> Dataset:
        return self._dataset(self.train_frame, augment=True)

    def prepare_model(self, model: nn.Module) -> None:
        """ImageNet weights into the backbone (the spec builds random weights, as predict must)."""
        assert isinstance(model, PandaClassifier)
        if self.options.pretrained or self.options.weights is not None:
            load_pretrained(model, self.options.arch, self.options.weights)

    @property
    def in_channels(self) -> int:
        return 3 if self.masks is None else 4

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return {"name": "classifier", "kwargs": {"arch": o.arch, "encoding": o.encoding, "layout": o.layout,
                                                 "in_channels": self.in_channels,
                                                 "grad_checkpoint": o.grad_checkpoint}}

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = self.cache.meta
        return {
            "tiling": {k: meta.get(k) for k in ("level", "tile_size", "n_tiles", "mode")},
            "grades": list(range(enc.N_GRADES)),
            "input": "uint8 tiles N×C×T×T; model computes 1 - x/255 (RGB), x/255 (mask channel)",
            "mask": None if self.masks is None else self.masks.describe(),
            "val_ids": self.val_frame["image_id"].tolist(),
            # the ordinal cut-offs tuned on validation (predict --threshold auto); None: rounding
            "threshold": _cutoffs_of(row) if self.options.encoding == "ordinal" else None,
        }

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        tiles, grades = batch
        return enc.loss(self.options.encoding, model(tiles), grades)

    def _predict(self, model: nn.Module, frame: pd.DataFrame) -> tuple[torch.Tensor, np.ndarray, float]:
        """(averaged-able scores of ``frame``'s slides (B×K on the CPU), their grades, the summed loss)."""
        loader = self.loaders.eval(self._dataset(frame, augment=False), self.config.batch_size)
        loss, probs, truths = 0.0, [], []
        for tiles, grades in console.track(loader, "validation", total=len(loader)):
            tiles, grades = self.to_device((tiles, grades))
            with self.autocast():
                logits = model(tiles)
            loss += float(enc.loss(self.options.encoding, logits, grades)) * len(grades)
            probs.append(enc.scores(self.options.encoding, logits).cpu())
            truths.append(grades.cpu())
        return torch.cat(probs), torch.cat(truths).numpy(), loss

    def validate(self, model: nn.Module) -> dict[str, float]:
        """QWK with the ordinal cut-offs tuned on these slides (``qwk``, picks best.pt), next to the fixed
        cut-offs' (``qwk_fixed``); the cut-offs (``cutoff_1..5``) go into the checkpoint."""
        encoding = self.options.encoding
        if self.options.precise_bn:
            self._recompute_bn(model)
        probs, y_true, loss = self._predict(model, self.val_frame)
        fixed = enc.grade_with_cutoffs(encoding, probs, list(FIXED)).numpy()
        row: dict[str, float] = {"val_loss": loss / max(1, len(y_true)), "qwk": qwk(y_true, fixed),
                                 "qwk_fixed": qwk(y_true, fixed)}
        y_pred = fixed
        if encoding == "ordinal":
            cutoffs, tuned = tune_cutoffs(enc.slide_score(encoding, probs).numpy(), y_true)
            y_pred = apply_cutoffs(enc.slide_score(encoding, probs).numpy(), cutoffs)
            row["qwk"] = tuned if np.isfinite(tuned) else row["qwk_fixed"]
            row.update({f"cutoff_{k + 1}": c for k, c in enumerate(cutoffs)})
        row["accuracy"] = float(np.mean(y_pred == y_true))
        return row

    def _recompute_bn(self, model: nn.Module) -> None:
        """BatchNorm statistics of the current weights from the training slides (``panda.bnstats``); the
        checkpoint saved after this validation carries them."""
        loader = self.loaders.eval(self._dataset(self.train_frame, augment=False), self.config.batch_size)

        def forward(net: nn.Module, batch: Any) -> None:
            with self.autocast():
                net(self.to_device(batch)[0])

        recompute_bn_stats(model, loader, forward, PRECISE_BN_SLIDES)

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """One row per validation slide: id, provider, isup (truth), score (the continuous ISUP score),
        pred (graded with the tuned cut-offs best.pt stores) and pred_fixed (the fixed cut-offs)."""
        encoding = self.options.encoding
        probs, y_true, _ = self._predict(model, self.val_frame)
        cutoffs = self._best_cutoffs()
        score = enc.slide_score(encoding, probs).numpy()
        pred = enc.grade_with_cutoffs(encoding, probs, cutoffs).numpy()
        fixed = enc.grade_with_cutoffs(encoding, probs, list(FIXED)).numpy()
        return [{"id": i, "provider": p, "isup": int(t), "score": round(float(s), 6), "pred": int(g),
                 "pred_fixed": int(f)}
                for i, p, t, s, g, f in zip(self.val_frame["image_id"], self.val_frame["data_provider"], y_true,
                                            score, pred, fixed)]

    def _best_cutoffs(self) -> list[float] | None:
        """The cut-offs best.pt stores (the oof rows are graded as ``predict --threshold auto`` would)."""
        from medchallenge.core.checkpoint import load_checkpoint

        best = self.run_dir / "best.pt"
        return load_checkpoint(best, map_location="cpu")["meta"].get("threshold") if best.is_file() else None

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """The tile mosaics of the first validation slides (H×W×3 uint8), truth and prediction in the tag."""
        dataset = self._dataset(self.val_frame, augment=False)
        images = {}
        for i in range(min(PREVIEWS, len(dataset))):
            stack, grade = dataset[i]
            logits = model(stack[None].to(self.device))
            pred = int(enc.decode(self.options.encoding, enc.scores(self.options.encoding, logits))[0])
            mosaic = tile_mosaic(stack[:, :3].permute(0, 2, 3, 1).numpy())
            step = max(1, mosaic.shape[0] // PREVIEW_SIDE)  # a 36×256 px mosaic is 1536 px: shown at ≤ 512
            images[f"slide{i}_isup{int(grade)}_pred{pred}"] = mosaic[::step, ::step]
        return images
