"""Training the lymphocytosis models on the patient cache with the shared engine.

Patients are packed into batches of at most ``--max-batch-images`` images and at most
``--batch-size`` patients (a larger bag travels alone), so the CNN sees flat batches regardless of
owner and memory stays bounded. The split is the engine's (``split_items``: by patient,
stratified by label, seeded; 50/50 as in the report with ``--val-fraction``, or fold ``--fold`` of
``--n-folds``). Each validation tunes the decision threshold for balanced accuracy
(:func:`~medchallenge.core.thresholds.best_threshold`): the best checkpoint maximises the tuned
score and stores its threshold, and the fixed-0.5 score is reported next to it. BCE is weighted for
the label imbalance by default (``--no-class-weight`` turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from medchallenge.core import console
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.metrics import balanced_accuracy
from medchallenge.core.thresholds import best_threshold
from medchallenge.lympho.cache import open_cache
from medchallenge.lympho.data import LABELS
from medchallenge.lympho.models import MODELS, load_pretrained_encoder

CLINICAL_FEATURES = ("age", "count", "birth_month", "birth_year")


def clinical_matrix(index: pd.DataFrame, features: list[str]) -> np.ndarray:
    """B×F raw clinical features: age (years), log lymphocyte count, birth month, birth year."""
    columns = {"age": index["AGE"], "count": np.log(index["LYMPH_COUNT"]), "birth_month": index["BIRTH_MONTH"],
               "birth_year": index["BIRTH_YEAR"]}
    return np.stack([np.asarray(columns[f], dtype=np.float32) for f in features], axis=1)


def bag_sizes(index: pd.DataFrame, max_images: int | None) -> list[int]:
    """Images each patient contributes to a batch: ``n_images``, capped at ``max_images`` when set.

    The batch sampler packs by these sizes, so a ``--max-images`` cap lets more patients share a
    batch (packing by the full bag size would leave batches mostly empty).
    """
    sizes = index["n_images"].astype(int).tolist()
    return sizes if not max_images else [min(n, max_images) for n in sizes]


class BagDataset(Dataset):
    """One patient: (images n×3×C×C uint8, label float, clinical F float32)."""

    def __init__(self, cache: Path, index: pd.DataFrame, clinical: np.ndarray, augment: bool,
                 max_images: int | None = None) -> None:
        self.cache = Path(cache)
        self.ids = index["ID"].tolist()
        self.labels = index["LABEL"].to_numpy()
        self.clinical = clinical
        self.augment = augment
        self.max_images = max_images

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = np.load(self.cache / "images" / f"{self.ids[i]}.npy", mmap_mode="r")
        if self.max_images and len(images) > self.max_images:
            images = images[np.sort(np.random.choice(len(images), self.max_images, replace=False))]
        images = np.array(images)  # a writable copy of the memory-mapped bag
        if self.augment:
            out = np.empty_like(images)
            for k, img in enumerate(images):
                img = np.rot90(img, np.random.randint(4), axes=(1, 2))
                if np.random.rand() < 0.5:
                    img = img[:, :, ::-1]
                out[k] = img
            images = out
        return (torch.from_numpy(np.ascontiguousarray(images)), torch.tensor(float(self.labels[i])),
                torch.from_numpy(self.clinical[i]))


def collate_bags(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat images N×3×C×C, their bag index (N,), labels (B,), clinical B×F."""
    images = torch.cat([it[0] for it in items])
    bags = torch.cat([torch.full((len(it[0]),), b, dtype=torch.long) for b, it in enumerate(items)])
    return images, bags, torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items])


class BagBatchSampler(Sampler):
    """Batches of patient indices with at most ``max_images`` images and ``max_bags`` patients each.

    A bag bigger than the image budget travels alone. ``max_bags`` (``--batch-size``) bounds the
    patients per batch: the balanced-accuracy gradient of a batch is per patient, and small bags
    would otherwise pack dozens of patients into one step. Shuffled per epoch from (seed, epoch)
    when ``shuffle``; under DDP each rank takes every world_size-th batch.
    """

    def __init__(self, sizes: list[int], max_images: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, max_bags: int | None = None) -> None:
        self.sizes, self.max_images, self.shuffle, self.seed = sizes, max_images, shuffle, seed
        self.max_bags = max_bags
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.sizes)))
        if self.shuffle:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        batches, current, total = [], [], 0
        for i in order:
            full = self.max_bags is not None and len(current) >= self.max_bags
            if current and (full or total + self.sizes[i] > self.max_images):
                batches.append(current)
                current, total = [], 0
            current.append(i)
            total += self.sizes[i]
        if current:
            batches.append(current)
        return batches[self.rank :: self.world_size]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


@dataclass
class LymphoOptions:
    """Lymphocytosis-specific training options."""

    cache: Path
    model: str = "mean"
    arch: str = "resnet18"
    pretrained: bool = True
    weights: Path | None = None
    clinical_features: list[str] = field(default_factory=lambda: ["age", "count"])
    loss: str = "bce"
    class_weight: bool = True
    val_fraction: float = 0.5
    max_batch_images: int = 256
    max_images: int | None = None
    chunk: int = 64


class LymphoTrainer(Trainer):
    """Patient-level malignant vs reactive; best checkpoint by validation balanced accuracy at the tuned threshold."""

    challenge = "lympho"
    monitor = "balanced_accuracy"
    tiebreak = ("auc", "max")  # a small validation set reaches BA 1.0 early: prefer the better ranking then
    registry = MODELS

    def __init__(self, config: TrainConfig, options: LymphoOptions) -> None:
        super().__init__(config, options)
        self.options = options
        bad = [f for f in options.clinical_features if f not in CLINICAL_FEATURES]
        if bad:
            raise OptionError(f"--clinical-features {','.join(bad)}: expected some of {', '.join(CLINICAL_FEATURES)}")
        if options.loss not in ("bce", "dice"):
            raise OptionError(f"--loss {options.loss}: expected bce or dice")
        index, self.cache_meta = open_cache(options.cache)
        labelled = index[index["LABEL"] >= 0].reset_index(drop=True)
        if labelled["LABEL"].nunique() < 2:
            raise DataError(options.cache, "training needs both malignant and reactive patients")
        # one item per patient: the patient is the group, its label the stratum
        train_idx, val_idx = self.split_items(labelled["ID"].tolist(), labelled["LABEL"].tolist(), options.val_fraction)
        self.train_index = labelled.iloc[train_idx].reset_index(drop=True)
        self.val_index = labelled.iloc[val_idx].reset_index(drop=True)
        raw = clinical_matrix(self.train_index, options.clinical_features)
        self.clinical_mean = raw.mean(axis=0)
        self.clinical_std = raw.std(axis=0) + 1e-6
        n_pos = int(self.train_index["LABEL"].sum())
        self.pos_weight = (len(self.train_index) - n_pos) / max(1, n_pos) if options.class_weight else None
        if options.max_images is not None:
            console.log(f"--max-images {options.max_images}: bags larger than that are subsampled at random each epoch")
        console.log(f"{len(self.train_index)} training / {len(self.val_index)} validation patients"
                    f" ({n_pos} malignant in training)")

    def _clinical(self, index: pd.DataFrame) -> np.ndarray:
        return (clinical_matrix(index, self.options.clinical_features) - self.clinical_mean) / self.clinical_std

    def _loader(self, index: pd.DataFrame, train: bool) -> DataLoader:
        dataset = BagDataset(self.options.cache, index, self._clinical(index), augment=train,
                             max_images=self.options.max_images if train else None)
        sampler = BagBatchSampler(bag_sizes(index, dataset.max_images), self.options.max_batch_images, shuffle=train,
                                  seed=self.config.seed, rank=self.dist.rank if train else 0,
                                  world_size=self.dist.world_size if train else 1, max_bags=self.config.batch_size)
        # only the training sampler is reseeded per epoch: loaders.eval keeps validation's out of that list
        if train:
            return self.loaders.train(dataset, 1, batch_sampler=sampler, collate_fn=collate_bags)
        return self.loaders.eval(dataset, 1, batch_sampler=sampler, collate_fn=collate_bags)

    def train_loader(self) -> DataLoader:
        return self._loader(self.train_index, train=True)

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return {"name": o.model, "kwargs": {"n_clinical": len(o.clinical_features), "arch": o.arch, "chunk": o.chunk}}

    def prepare_model(self, model: nn.Module) -> None:
        if self.options.pretrained or self.options.weights is not None:
            load_pretrained_encoder(model, self.options.arch, self.options.weights)  # type: ignore[arg-type]

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"clinical_features": self.options.clinical_features,
                "clinical_mean": self.clinical_mean.tolist(), "clinical_std": self.clinical_std.tolist(),
                "crop": self.cache_meta["crop"], "threshold": float((row or {}).get("threshold", 0.5)),
                "val_ids": self.val_index["ID"].tolist()}

    def _loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        def one(logit: torch.Tensor) -> torch.Tensor:
            if self.options.loss == "dice":
                p = torch.sigmoid(logit)
                return 1 - (2 * (p * labels).sum() + 1) / (p.sum() + labels.sum() + 1)
            weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logit.device)
            return F.binary_cross_entropy_with_logits(logit, labels, pos_weight=weight)

        if self.options.model == "sum-of-losses":
            return one(out["image_logit"]) + one(out["clinical_logit"])
        if self.options.model == "moe":  # the mixture, plus each expert so both stay useful
            return one(out["logit"]) + 0.5 * (one(out["image_logit"]) + one(out["clinical_logit"]))
        return one(out["logit"])

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, bags, labels, clinical = batch
        return self._loss(model(images, bags, clinical), labels)

    def _val_scores(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray, float]:
        """P(malignant) (V,), truth (V,) of the validation patients in order, and the mean loss."""
        probs, labels, losses = [], [], []
        loader = self._loader(self.val_index, train=False)
        for images, bags, y, clinical in console.track(loader, "validation", total=len(loader)):
            images, bags, y, clinical = self.to_device((images, bags, y, clinical))
            with self.autocast():
                out = model(images, bags, clinical)
            losses.append(float(self._loss(out, y)) * len(y))
            probs.append(torch.sigmoid(out["logit"].float()).cpu())
            labels.append(y.cpu())
        t = torch.cat(labels).numpy().astype(int)
        return torch.cat(probs).numpy(), t, sum(losses) / len(t)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Balanced accuracy at the threshold tuned on these patients (monitored), and at a fixed 0.5."""
        from sklearn.metrics import roc_auc_score

        p, t, loss = self._val_scores(model)
        threshold, tuned = best_threshold(p, t, balanced_accuracy)
        return {"val_loss": loss, "balanced_accuracy": tuned, "threshold": threshold,
                "balanced_accuracy_at_0.5": balanced_accuracy(t, (p >= 0.5).astype(int)),
                "auc": float(roc_auc_score(t, p)) if len(set(t)) == 2 else float("nan")}

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """One row per validation patient: id, label, probability, and the prediction at best.pt's threshold."""
        from medchallenge.core.checkpoint import load_checkpoint

        threshold = float(load_checkpoint(self.run_dir / "best.pt")["meta"]["threshold"])
        p, t, _ = self._val_scores(model)
        # the threshold on every row: cv pools each fold's rows with their own fold's threshold
        return [{"id": pid, "label": int(label), "probability": float(prob), "threshold": threshold,
                 "prediction": int(prob >= threshold)} for pid, label, prob in zip(self.val_index["ID"], t, p)]

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """Up to 4 images of the first validation patient of each class, captioned with P(malignant).

        Tags ``<ID> (<truth>)``; the caption under each image gives the patient's probability and,
        for the attention model, that image's attention weight.
        """
        previews: dict[str, Any] = {}
        for label in (0, 1):
            rows = self.val_index.index[self.val_index["LABEL"] == label]
            if len(rows):
                row = self.val_index.iloc[[int(rows[0])]]
                previews[f"{row['ID'].iloc[0]} ({LABELS[label]})"] = self._preview(model, row)
        return previews

    def _preview(self, model: nn.Module, row: pd.DataFrame) -> np.ndarray:
        """H×W×3 uint8: the patient's first images side by side, each captioned."""
        from medchallenge.core.preview import side_by_side

        bag = np.load(self.options.cache / "images" / f"{row['ID'].iloc[0]}.npy", mmap_mode="r")[:4]
        images = torch.from_numpy(np.array(bag)).to(self.device)  # a writable copy of the memory map
        bags = torch.zeros(len(bag), dtype=torch.long, device=self.device)
        clinical = torch.as_tensor(self._clinical(row), dtype=torch.float32, device=self.device)
        out = model(images, bags, clinical)
        prob = float(torch.sigmoid(out["logit"].float())[0])
        weights = out["attention"].float().cpu().tolist() if "attention" in out else [None] * len(bag)
        return side_by_side(*(_captioned(img.transpose(1, 2, 0), f"p={prob:.2f}" if w is None else f"p={prob:.2f} a={w:.2f}")
                              for img, w in zip(bag, weights)))


def _captioned(image: np.ndarray, text: str, min_width: int = 96) -> np.ndarray:
    """``image`` (H×W×3 uint8, enlarged to ``min_width`` px by pixel repetition) above a strip with ``text``."""
    from PIL import Image, ImageDraw

    factor = -(-min_width // image.shape[1])  # small crops (32 px in tests) still leave room for the caption
    image = np.ascontiguousarray(image.repeat(factor, axis=0).repeat(factor, axis=1))
    strip = Image.new("RGB", (image.shape[1], 14), "white")
    ImageDraw.Draw(strip).text((2, 1), text, fill="black")
    return np.concatenate([image, np.asarray(strip)], axis=0)
