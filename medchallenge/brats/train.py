"""Patch-based training of the Havaei models with the shared engine (BraTS; LiTS builds on it).

Phase 1 (``--phase 1``): patches whose centre labels are equiprobable (a class, then a case
holding it, then a voxel). Phase 2 (``--phase 2 --from PHASE1/best.pt``): the natural label
distribution, everything but the output layer frozen — the paper's dual-stage remedy for the
imbalance. SGD with momentum rising linearly from ``--momentum-start`` (0.5) to
``--momentum-end`` (0.9) over the epochs, learning rate ``--lr`` (0.005) multiplied by
``--lr-decay`` every epoch, dropout, L1 and L2 penalties. Cross-entropy on logits (the report fed
softmax outputs to CrossEntropyLoss; not here). Validation segments whole slices through the
convolutional output layer and scores the challenge's Dice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from medchallenge.brats.metrics import region_dice
from medchallenge.brats.models import build_model, path_parameters
from medchallenge.brats.patches import cached_cases, open_cache
from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.engine.optim import describe
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.splits import grouped_split


def extract_patch(images: np.ndarray, s: int, y: int, x: int, size: int) -> np.ndarray:
    """C×size×size around (y, x) of slice ``s`` of C×S×H×W images, zero outside."""
    r = size // 2
    c, _, h, w = images.shape
    out = np.zeros((c, size, size), np.float32)
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    out[:, y0 - (y - r) : y1 - (y - r), x0 - (x - r) : x1 - (x - r)] = images[:, s, y0:y1, x0:x1]
    return out


class PatchDataset(Dataset):
    """``n`` random patches per epoch: (C×P×P float32, class int64), equiprobable or natural."""

    def __init__(self, cache: Path, cases: list[str], size: int, n: int, equiprobable: bool,
                 classes: list[int]) -> None:
        self.cache, self.cases, self.size, self.n = Path(cache), cases, size, n
        self.equiprobable, self.classes = equiprobable, classes
        self._index = {c: dict(np.load(self.cache / "index" / f"{c}.npz")) for c in cases}
        self._images: dict[str, np.ndarray] = {}
        self.holding = {k: [c for c in cases if len(self._index[c][f"class_{k}"])] for k in classes}
        self.classes = [k for k in classes if self.holding[k]]

    def __len__(self) -> int:
        return self.n

    def _volume(self, case: str) -> np.ndarray:
        if case not in self._images:
            self._images[case] = np.load(self.cache / "images" / f"{case}.npy", mmap_mode="r")
        return self._images[case]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.equiprobable:
            k = self.classes[np.random.randint(len(self.classes))]
            case = self.holding[k][np.random.randint(len(self.holding[k]))]
            pool = self._index[case][f"class_{k}"]
        else:
            case = self.cases[np.random.randint(len(self.cases))]
            pool = np.concatenate([self._index[case][f"class_{k}"] for k in self.classes])
            k = -1
        flat = int(pool[np.random.randint(len(pool))])
        images = self._volume(case)
        _, _, h, w = images.shape
        s, rem = divmod(flat, h * w)
        y, x = divmod(rem, w)
        if k < 0:
            k = int(np.load(self.cache / "labels" / f"{case}.npy", mmap_mode="r")[s, y, x])
        return torch.from_numpy(extract_patch(images, s, y, x, self.size)), torch.tensor(k, dtype=torch.int64)


@torch.no_grad()
def segment_slices(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 8,
                   dtype: torch.dtype | None = None, allowed: list[int] | None = None) -> np.ndarray:
    """Class per voxel (S×H×W uint8) of C×S×H×W normalised images, whole slices in one pass each.

    Slices are padded with zeros by half the receptive field on every side (16 px for TwoPathCNN,
    32 for InputCascadeCNN), so the output has the input's size. ``allowed`` restricts the argmax.
    """
    from medchallenge.core.device import autocast

    pad = model.receptive_field // 2
    _, n_slices, h, w = images.shape
    out = np.empty((n_slices, h, w), np.uint8)
    mask = None
    for start in range(0, n_slices, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[:, start : start + batch_size], dtype=np.float32))
        x = F.pad(x.permute(1, 0, 2, 3).to(device), (pad, pad, pad, pad))
        with autocast(device, dtype):
            logits = model(x).float()
        if allowed is not None:
            if mask is None:
                mask = torch.full((logits.shape[1],), float("-inf"), device=device)
                mask[allowed] = 0
            logits = logits + mask[None, :, None, None]
        out[start : start + batch_size] = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
    return out


@dataclass
class HavaeiOptions:
    """Options of the patch-based Havaei training (BraTS and LiTS)."""

    cache: Path
    model: str = "twopath"
    phase: int = 1
    from_checkpoint: Path | None = None
    patches_per_epoch: int = 10_000
    dropout: float = 0.2
    pieces: int = 2
    l1: float = 1e-6
    momentum_start: float = 0.5
    momentum_end: float = 0.9
    lr_decay: float = 0.9
    val_fraction: float = 0.2


class HavaeiTrainer(Trainer):
    """TwoPathCNN / InputCascadeCNN on patches; best checkpoint by the mean of the challenge's Dice."""

    challenge = "brats"
    monitor = "mean_dice"
    n_classes = 5
    allowed_classes = [0, 1, 2, 4]

    def __init__(self, config: TrainConfig, options: HavaeiOptions) -> None:
        config.optimizer, config.momentum, config.scheduler = "sgd", options.momentum_start, "none"
        super().__init__(config, options)
        if options.model not in ("twopath", "inputcascade"):
            raise OptionError(f"--model {options.model}: expected twopath or inputcascade")
        if options.phase not in (1, 2):
            raise OptionError(f"--phase {options.phase}: expected 1 or 2")
        if options.phase == 2 and options.from_checkpoint is None:
            raise OptionError("--phase 2 needs --from PHASE1_RUN/best.pt")
        self.options = options
        self.meta = open_cache(options.cache)
        self.check_cache()
        cases = cached_cases(options.cache)
        if len(cases) < 2:
            raise DataError(options.cache, f"{len(cases)} case(s) cached: need at least 2")
        train_idx, val_idx = grouped_split(cases, options.val_fraction, config.seed)
        self.train_cases = [cases[i] for i in train_idx]
        self.val_cases = [cases[i] for i in val_idx]
        self.in_channels = len(self.meta["channels"])
        console.log(f"phase {options.phase}: {len(self.train_cases)} training / {len(self.val_cases)} validation"
                    f" case(s); {'equiprobable' if options.phase == 1 else 'natural'} patch sampling")

    def check_cache(self) -> None:
        if self.meta.get("challenge") != self.challenge:
            raise DataError(self.options.cache, f"a {self.meta.get('challenge')} cache, expected {self.challenge}")

    @property
    def patch_size(self) -> int:
        return 65 if self.options.model == "inputcascade" else 33

    def model_spec(self) -> dict[str, Any]:
        return {"name": self.options.model, "kwargs": {"in_channels": self.in_channels, "num_classes": self.n_classes,
                                                       "pieces": self.options.pieces, "dropout": self.options.dropout}}

    def build_model(self) -> nn.Module:
        model = build_model(self.model_spec())
        if self.options.from_checkpoint is not None:
            self.load_pretrained(model)
        if self.options.phase == 2:
            for p in model.parameters():
                p.requires_grad = False
            for p in path_parameters(model)["output"]:
                p.requires_grad = True
        return model

    def load_pretrained(self, model: nn.Module) -> None:
        """Phase 2: start from the phase-1 weights (same challenge and model)."""
        state = load_checkpoint(self.options.from_checkpoint, challenge=self.challenge, models=[self.options.model])
        if state["model"]["kwargs"]["in_channels"] != self.in_channels:
            raise DataError(self.options.from_checkpoint, f"checkpoint has {state['model']['kwargs']['in_channels']}"
                                                          f" input channels, the cache {self.in_channels}")
        model.load_state_dict(state["state_dict"])

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {"channels": self.meta["channels"], "label_values": self.meta["label_values"],
                "normalisation": self.meta["normalisation"], "phase": self.options.phase,
                "val_cases": self.val_cases, "patch_size": self.patch_size}
        if self.challenge == "brats":  # the label convention of the training data (caches before it: 2021)
            meta["convention"] = self.meta.get("convention", "brats2021")
        return meta

    def configure_optimizers(self, model: nn.Module, steps_per_epoch: int):  # type: ignore[no-untyped-def]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.config.lr, momentum=self.options.momentum_start,
                                    weight_decay=self.config.weight_decay)
        decay = self.options.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: decay ** (step / steps_per_epoch))
        # the report's schedule: lr × decay per epoch, momentum ramped linearly (on_epoch_start)
        describe(scheduler, "exponential", decay_per_epoch=decay, momentum_start=self.options.momentum_start,
                 momentum_end=self.options.momentum_end)
        return optimizer, scheduler

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        o = self.options
        frac = epoch / max(1, self.config.epochs - 1)
        for group in optimizer.param_groups:
            group["momentum"] = o.momentum_start + (o.momentum_end - o.momentum_start) * frac

    def train_loader(self) -> DataLoader:
        dataset = PatchDataset(self.options.cache, self.train_cases, self.patch_size, self.options.patches_per_epoch,
                               equiprobable=self.options.phase == 1, classes=self.allowed_classes)
        return self.loaders.train(dataset, self.config.batch_size)

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        patches, labels = batch
        logits = model(patches).flatten(1)
        loss = F.cross_entropy(logits.float(), labels)
        if self.options.l1 > 0:
            trainable = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
            loss = loss + self.options.l1 * sum(p.abs().sum() for p in trainable)
        return loss

    def score_case(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        return region_dice(pred, truth)

    def restrict(self, pred: np.ndarray, images: np.ndarray) -> None:
        """Background outside the brain (all channels 0 in the cache), as ``brats predict`` writes it."""
        pred[~(np.asarray(images) != 0).any(axis=0)] = 0

    def validate(self, model: nn.Module) -> dict[str, float]:
        rows = []
        for case in self.val_cases:
            images = np.load(self.options.cache / "images" / f"{case}.npy", mmap_mode="r")
            truth = np.load(self.options.cache / "labels" / f"{case}.npy")
            pred = segment_slices(model, images, self.device, self.config.batch_size // 8 or 1, self.amp_dtype,
                                  self.allowed_classes)
            self.restrict(pred, images)
            rows.append(self.score_case(pred, truth))
        metrics = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        metrics["mean_dice"] = float(np.nanmean(list(metrics.values())))
        return metrics
