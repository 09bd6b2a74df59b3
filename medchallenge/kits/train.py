"""Training the KiTS U-Net on cached axial slices with the shared engine.

Validation is split by case (never by slice), stratified by whether a case holds tumour: one
seeded ``--val-fraction`` split or fold ``--fold`` of ``--n-folds`` (``Trainer.split_items``, recorded
in RUN/split.json). Each validation case is segmented whole, slice by slice, and scored with the
official kidney and tumour Dice; the best checkpoint maximises their mean (the composite); after
the last epoch best.pt's per-case scores and voxel counts go to RUN/oof.csv for ``kits cv``.
Foreground oversampling draws slices holding kidney or tumour with probability ``--oversample``;
``--mirror`` (default) flips each training crop in H and W with probability 0.5 each (nnU-Net's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from medchallenge.core import console
from medchallenge.core.augment import random_mirror
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.losses import dice_ce_loss
from medchallenge.core.names import check_names
from medchallenge.kits.data import CASE_PATTERN
from medchallenge.kits.metrics import CaseScore, oof_row, score_case, summarise
from medchallenge.kits.models import MODELS, unet_spec
from medchallenge.kits.predict import segment_stack
from medchallenge.kits.slices import load_meta


class SliceDataset(Dataset):
    """(image 1×P×P float32, labels P×P int64) crops of cached slices (P = ``patch``).

    With ``augment`` a crop is drawn at random (else the centre crop) and, with ``mirror`` too,
    flipped in H and in W, each with probability 0.5, image and label together (nnU-Net's
    mirroring, what ``predict --tta`` averages over). The draws come from a numpy Generator seeded
    per item from the global numpy state, which the engine seeds per run and per DataLoader worker
    (``core.seeding``), so a run's crops and flips are reproducible from ``--seed``.
    """

    def __init__(self, slices: Path, rows: pd.DataFrame, patch: int, background: float, augment: bool,
                 mirror: bool = True) -> None:
        self.slices = Path(slices)
        self.cases = rows["case"].tolist()
        self.index = rows["slice"].to_numpy()
        self.patch = patch
        self.background = background
        self.augment = augment
        self.mirror = mirror
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def _arrays(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        if case not in self._open:
            self._open[case] = (np.load(self.slices / "images" / f"{case}.npy", mmap_mode="r"),
                                np.load(self.slices / "labels" / f"{case}.npy", mmap_mode="r"))
        return self._open[case]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._arrays(self.cases[i])
        image = np.asarray(images[self.index[i]], dtype=np.float32)
        label = np.asarray(labels[self.index[i]], dtype=np.int64)
        p = self.patch
        h, w = image.shape
        ph, pw = max(0, p - h), max(0, p - w)
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw)), constant_values=self.background)
            label = np.pad(label, ((0, ph), (0, pw)))
            h, w = image.shape
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        y = int(rng.integers(0, h - p + 1)) if self.augment else (h - p) // 2
        x = int(rng.integers(0, w - p + 1)) if self.augment else (w - p) // 2
        image, label = image[y : y + p, x : x + p], label[y : y + p, x : x + p]
        if self.augment and self.mirror:
            image, label = random_mirror([image, label], rng)
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(np.ascontiguousarray(label))


LOSSES = ("ce", "dice-ce")
PREVIEW_CASES = 3  # TensorBoard previews per epoch
DEFAULT_PATCH = 512  # px: the real slices' size, as in the report


@dataclass
class KitsOptions:
    """KiTS-specific training options (recorded by the engine in config.json and checkpoints)."""

    cache: Path
    depth: int = 4
    width: int = 32
    batch_norm: bool = False
    dropout: float = 0.0
    loss: str = "dice-ce"  # the report's "ce" stays at Dice 0 for epochs on small data (issue 14)
    oversample: float = 0.33  # nnU-Net's share of foreground patches
    patch_size: int | None = None  # None: 512 px, or the cached slices' size when smaller
    val_fraction: float = 0.2
    predict_batch: int = 8
    mirror: bool = True  # flip H and W with p 0.5 each (nnU-Net's); before issue 14: W only, p 0.5


class KitsTrainer(Trainer):
    """2D U-Net on axial slices; best checkpoint by the composite Dice on validation cases."""

    challenge = "kits"
    monitor = "composite_dice"
    registry = MODELS

    def __init__(self, config: TrainConfig, options: KitsOptions) -> None:
        super().__init__(config, options)
        self.options = options
        if options.loss not in LOSSES:
            raise OptionError(f"--loss {options.loss}: expected one of {', '.join(LOSSES)}")
        if options.patch_size is not None and options.patch_size % 2**options.depth:
            raise OptionError(f"--patch-size {options.patch_size} must be a multiple of 2**depth = {2**options.depth}")
        self.norm = load_meta(options.cache)
        self.index = self._read_index(Path(options.cache))
        if options.patch_size is None:
            options.patch_size = self._default_patch()  # recorded as run in config.json and the checkpoints
        cases = sorted(self.index["case"].unique())
        if len(cases) < 2:
            raise DataError(options.cache, f"{len(cases)} case(s) cached: need at least 2 to split by case")
        # split by case (a case's slices never straddle), stratified by whether the case holds tumour
        tumour = self.index.groupby("case")["has_tumor"].any()
        _, val_idx = self.split_items(cases, [bool(tumour[c]) for c in cases], options.val_fraction)
        self.val_cases = [cases[i] for i in val_idx]
        self.train_rows = self.index[~self.index["case"].isin(self.val_cases)].reset_index(drop=True)
        console.log(f"{len(cases) - len(self.val_cases)} training case(s) ({len(self.train_rows)} slices),"
                    f" {len(self.val_cases)} validation case(s): {', '.join(self.val_cases)}")
        self._warn_padding()

    @staticmethod
    def _read_index(cache: Path) -> pd.DataFrame:
        index_file = cache / "index.csv"
        if not index_file.is_file():
            raise DataError(cache, "slice cache without index.csv")
        index = pd.read_csv(index_file, dtype={"case": str})
        # the case column names the cached .npy files: each must be a plain case_XXXXX
        check_names(index["case"], index_file, what="case", pattern=CASE_PATTERN)
        return index

    def _default_patch(self) -> int:
        """The report's 512 px, or the smallest cached slice side when smaller (a multiple of 2**depth).

        A 512 px patch on 96 px sample slices is >96% padded air: 28× the compute per slice, and
        tiny runs learn to predict background (issue 14).
        """
        multiple = 2**self.options.depth
        smallest = DEFAULT_PATCH
        if {"height", "width"} <= set(self.index.columns) and not self.index.empty:
            smallest = int(self.index[["height", "width"]].min().min())
        return max(multiple, min(DEFAULT_PATCH, smallest) // multiple * multiple)

    def _warn_padding(self) -> None:
        """A patch larger than the slices trains mostly on padded air (the 512 px default on 96 px samples)."""
        if not {"height", "width"} <= set(self.index.columns) or self.index.empty:
            return
        h, w = int(self.index["height"].min()), int(self.index["width"].min())
        if self.options.patch_size > min(h, w):
            console.warn(f"--patch-size {self.options.patch_size} is larger than the cached slices (smallest"
                         f" {h}×{w} px): they are padded with air; choose a --patch-size of at most {min(h, w)}")

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return unet_spec(o.depth, o.width, o.batch_norm, o.dropout)

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        n = self.norm
        return {"normalisation": {"low": n.low, "high": n.high, "mean": n.mean, "std": n.std},
                "labels": {"0": "background", "1": "kidney", "2": "tumor"}, "val_cases": self.val_cases}

    def train_loader(self) -> DataLoader:
        dataset = SliceDataset(self.options.cache, self.train_rows, self.options.patch_size, self.norm.background,
                               augment=True, mirror=self.options.mirror)
        sampler = None
        p = self.options.oversample
        if p > 0:
            fg = (self.train_rows["has_kidney"] | self.train_rows["has_tumor"]).to_numpy()
            if 0 < fg.sum() < len(fg):
                weights = np.where(fg, p / fg.sum(), (1 - p) / (~fg).sum())
                generator = self.loaders.generator()  # reseeded every epoch by the engine
                sampler = WeightedRandomSampler(torch.as_tensor(weights), len(fg), replacement=True,
                                                generator=generator)
        return self.loaders.train(dataset, self.config.batch_size, sampler=sampler)

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        image, label = batch
        logits = model(image)
        if self.options.loss == "dice-ce":
            return dice_ce_loss(logits, label)
        return F.cross_entropy(logits.float(), label)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Each validation case segmented whole through ``core.inference`` and scored officially."""
        summary = summarise(self._score_val_cases(model, "validation"))
        return {k: summary[k] for k in ("kidney_dice", "tumor_dice", "composite_dice", "pixel_accuracy")}

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """Per validation case: its Dice values and the voxel counts (tp, fp, fn per region) ``cv_score`` pools."""
        return [oof_row(score) for score in self._score_val_cases(model, "out-of-fold")]

    def _score_val_cases(self, model: nn.Module, description: str) -> list[CaseScore]:
        """Every validation case segmented whole and scored officially."""
        scores = []
        # a whole validation case can take minutes on a CPU: batch logs say how far it is
        for case in console.track(self.val_cases, description, total=len(self.val_cases)):
            images, labels = self._val_arrays(case)
            pred = segment_stack(model, images, self.device, self.options.predict_batch, self.norm.background,
                                 self.amp_dtype)
            scores.append(score_case(case, pred, labels))
        return scores

    def _val_arrays(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """(normalised slices S×H×W float16, memory-mapped; labels S×H×W uint8) of a cached case."""
        cache = Path(self.options.cache)
        return np.load(cache / "images" / f"{case}.npy", mmap_mode="r"), np.load(cache / "labels" / f"{case}.npy")

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """Truth | prediction overlays (H×W'×3 uint8) of the slice with the most foreground of up to 3 validation cases."""
        from medchallenge.core.preview import truth_and_prediction

        previews = {}
        for case in self.val_cases[:PREVIEW_CASES]:
            images, labels = self._val_arrays(case)
            k = int(np.argmax((labels > 0).sum(axis=(1, 2))))
            image = np.asarray(images[k : k + 1], dtype=np.float32)
            pred = segment_stack(model, image, self.device, 1, self.norm.background, self.amp_dtype)
            previews[f"{case}/slice_{k}"] = truth_and_prediction(image[0], labels[k], pred[0])
        return previews
