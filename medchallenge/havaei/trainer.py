"""Patch-based training of the Havaei models with the shared engine (the base of BraTS and LiTS training).

SGD with momentum rising linearly from ``--momentum-start`` (0.5) to ``--momentum-end`` (0.9) over
the epochs, learning rate ``--lr`` multiplied by ``--lr-decay`` every epoch (the report's schedule:
``--optimizer``/``--scheduler`` are not offered), dropout, L1 (``--l1``) and L2 (``--weight-decay``)
penalties. Cross-entropy on logits. Phase 1 samples patches whose centre classes are equiprobable
(a class, then a case holding it, then a voxel); phase 2 the natural distribution. ``--mirror``
(the default, nnU-Net's) flips each training patch in H and in W, each with probability 0.5 — the
views ``predict --tta`` averages; the label is the patch's centre voxel, which a flip of an odd-sized
patch leaves in place. Validation segments whole slices of at most ``--val-max-cases`` cases and
scores the challenge's Dice.
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

from medchallenge.core import console
from medchallenge.core.augment import random_mirror
from medchallenge.core.cache import CacheDir
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.engine.optim import describe
from medchallenge.core.errors import DataError, OptionError
from medchallenge.havaei.inference import segment_slices
from medchallenge.havaei.models import InputCascadeCNN, path_parameters
from medchallenge.havaei.patches import cached_cases


def extract_patch(images: np.ndarray, s: int, y: int, x: int, size: int) -> np.ndarray:
    """C×size×size around (y, x) of slice ``s`` of C×S×H×W images, zero outside."""
    r = size // 2
    c, _, h, w = images.shape
    out = np.zeros((c, size, size), np.float32)
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    out[:, y0 - (y - r) : y1 - (y - r), x0 - (x - r) : x1 - (x - r)] = images[:, s, y0:y1, x0:x1]
    return out


class PatchDataset(Dataset):
    """``n`` random patches per epoch: (C×P×P float32, class int64), equiprobable or natural; with
    ``mirror`` each patch is flipped in H and in W, each with probability 0.5 (the centre label stays)."""

    def __init__(self, cache: Path, cases: list[str], size: int, n: int, equiprobable: bool,
                 classes: list[int], mirror: bool = False) -> None:
        self.cache, self.cases, self.size, self.n = Path(cache), cases, size, n
        self.equiprobable, self.mirror = equiprobable, mirror
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
        patch = extract_patch(images, s, y, x, self.size)
        if self.mirror:
            # np.random's global state: the engine seeds it per DataLoader worker, like the draws above
            patch = np.ascontiguousarray(random_mirror([patch])[0])
        return torch.from_numpy(patch), torch.tensor(k, dtype=torch.int64)


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
    val_max_cases: int = 4
    mirror: bool = True


def freeze_all_but_output(model: nn.Module) -> None:
    """Phase 2: only the final output layer trains (the paper's dual-stage remedy for the imbalance)."""
    for p in model.parameters():
        p.requires_grad = False
    for p in path_parameters(model)["output"]:
        p.requires_grad = True


class HavaeiTrainer(Trainer):
    """TwoPathCNN / InputCascadeCNN on patches; best checkpoint by the mean of the challenge's Dice.

    A challenge sets ``challenge``, ``cache_kind``, ``registry``, ``n_classes``, ``allowed_classes``
    (and ``strata_class`` to stratify the split) and fills in ``prepare_model`` (``--from``),
    ``score_case``, ``restrict`` and, for ``cv``, ``oof_row``.
    """

    monitor = "mean_dice"
    cache_kind = ""
    n_classes = 0
    allowed_classes: list[int] = []
    strata_class: int | None = None  # the class whose presence in a case stratifies the split (BraTS: ET)

    def __init__(self, config: TrainConfig, options: HavaeiOptions) -> None:
        config.optimizer, config.momentum, config.scheduler = "sgd", options.momentum_start, "none"
        super().__init__(config, options)
        if options.phase not in (1, 2):
            raise OptionError(f"--phase {options.phase}: expected 1 or 2")
        if options.phase == 2 and options.from_checkpoint is None:
            raise OptionError("--phase 2 needs --from PHASE1_RUN/best.pt")
        self.options = options
        self.meta = CacheDir(options.cache, self.cache_kind).settings()
        cases = cached_cases(options.cache)
        if len(cases) < 2:
            raise DataError(options.cache, f"{len(cases)} case(s) cached: need at least 2")
        # by case (a case's slices never straddle), stratified by whether it holds the stratifying class;
        # --n-folds/--fold pick a fold of a seeded stratified k-fold (RUN/split.json records it)
        train_idx, val_idx = self.split_items(cases, self.case_strata(cases), options.val_fraction)
        self.train_cases = [cases[i] for i in train_idx]
        self.val_cases = [cases[i] for i in val_idx]
        self.in_channels = len(self.meta["channels"])
        console.log(f"phase {options.phase}: {len(self.train_cases)} training / {len(self.val_cases)} validation"
                    f" case(s) (scoring at most {options.val_max_cases});"
                    f" {'equiprobable' if options.phase == 1 else 'natural'} patch sampling"
                    f"{', mirrored' if options.mirror else ''}")

    def case_strata(self, cases: list[str]) -> list[bool] | None:
        """Per case: does it hold voxels of ``strata_class`` (from the cache's index, no volume read)."""
        if self.strata_class is None:
            return None
        key = f"class_{self.strata_class}"
        strata = []
        for case in cases:
            with np.load(self.options.cache / "index" / f"{case}.npz") as index:
                strata.append(bool(key in index.files and len(index[key])))
        return strata

    @property
    def patch_size(self) -> int:
        return InputCascadeCNN.receptive_field if self.options.model == "inputcascade" else 33

    def model_spec(self) -> dict[str, Any]:
        return {"name": self.options.model, "kwargs": {"in_channels": self.in_channels, "num_classes": self.n_classes,
                                                       "pieces": self.options.pieces, "dropout": self.options.dropout}}

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"channels": self.meta["channels"], "label_values": self.meta["label_values"],
                "normalisation": self.meta["normalisation"], "phase": self.options.phase,
                "val_cases": self.val_cases, "patch_size": self.patch_size}

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
                               equiprobable=self.options.phase == 1, classes=self.allowed_classes,
                               mirror=self.options.mirror)
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
        raise NotImplementedError

    def restrict(self, pred: np.ndarray, images: np.ndarray) -> None:
        """Set voxels the challenge never scores as foreground to background (in place)."""

    def _cached(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """(C×S×H×W normalised images, a memmap; S×H×W class indices) of a cached case."""
        images = np.load(self.options.cache / "images" / f"{case}.npy", mmap_mode="r")
        return images, np.load(self.options.cache / "labels" / f"{case}.npy")

    def segment(self, model: nn.Module, images: np.ndarray) -> np.ndarray:
        """Classes S×H×W of cached C×S×H×W images, whole slices, restricted as the challenge's predict does."""
        pred = segment_slices(model, images, self.device, max(1, self.config.batch_size // 8), self.amp_dtype,
                              self.allowed_classes)
        self.restrict(pred, images)
        return pred

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Whole-slice segmentation of the first ``--val-max-cases`` validation cases (bounded cost)."""
        rows = []
        cases = self.val_cases[: self.options.val_max_cases]
        for case in console.track(cases, "validation", total=len(cases)):  # a whole volume can take minutes
            images, truth = self._cached(case)
            rows.append(self.score_case(self.segment(model, images), truth))
        metrics = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        metrics["mean_dice"] = float(np.nanmean(list(metrics.values())))
        return metrics

    def oof_row(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
        """One out-of-fold row's values for a case (classes S×H×W each): by default its Dice scores."""
        return self.score_case(pred, truth)

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """Out-of-fold rows (``id`` + :meth:`oof_row`), best.pt's weights: with ``--n-folds``, every
        validation case (``cv`` pools them); without, the ``--val-max-cases`` that validation scores
        (a whole volume costs seconds on a GPU, minutes on a CPU)."""
        cases = self.val_cases if self.config.n_folds else self.val_cases[: self.options.val_max_cases]
        rows = []
        for case in console.track(cases, "out-of-fold", total=len(cases)):
            images, truth = self._cached(case)
            rows.append({"id": case, **self.oof_row(self.segment(model, images), truth)})
        return rows

    def preview_images(self, model: nn.Module, n: int = 2) -> dict[str, np.ndarray]:
        """TensorBoard: for the first ``n`` validation cases, the slice with the most foreground (tumour or
        organ), first channel in grey, truth (left) and prediction (right) overlaid; H×W×3 uint8 each."""
        from medchallenge.core.preview import truth_and_prediction

        previews = {}
        for case in self.val_cases[:n]:
            images, truth = self._cached(case)
            s = int(np.argmax((truth > 0).reshape(len(truth), -1).sum(axis=1)))
            pred = self.segment(model, np.asarray(images[:, s : s + 1]))[0]
            previews[case] = truth_and_prediction(np.asarray(images[0, s], np.float32), truth[s], pred)
        return previews
