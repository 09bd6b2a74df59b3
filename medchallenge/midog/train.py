"""Training RetinaNet on patches with guided sampling; validation on whole images by F1.

Guided sampling (training only): with probability ``p_mitosis`` (0.5) a patch contains a random
mitotic figure of the image — at a random position inside the patch, or centred with
``--centre`` — else it is uniform over the image; patches always lie within the image (an image
smaller than a patch is padded white); images without mitoses always sample uniformly. Patches
are read lazily from the TIFF. Validation runs the deterministic whole-image tiling of
``predict`` and picks the score threshold that maximises F1 on the validation images; that
threshold is stored in the checkpoint (``predict --threshold auto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medchallenge.core import console
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import OptionError
from medchallenge.core.wsi import SlideReader, open_slide
from medchallenge.midog.data import MidogImage, annotated_images, load_midog_json, split_images
from medchallenge.midog.inference import detect_image
from medchallenge.midog.metrics import Counts, best_threshold, match_image
from medchallenge.midog.models import build_detector

BOX = 50.0


def sample_origin(img: MidogImage, patch: int, rng: np.random.Generator, p_mitosis: float = 0.5,
                  centre: bool = False) -> tuple[int, int]:
    """Top-left (x, y) of a training patch, always within the image (0 when the image is smaller)."""
    max_x, max_y = max(0, img.width - patch), max(0, img.height - patch)
    if len(img.mitoses) and rng.random() < p_mitosis:
        cx, cy = img.mitoses[rng.integers(len(img.mitoses))]
        if centre:
            x, y = cx - patch / 2, cy - patch / 2
        else:  # the figure's centre anywhere inside the patch
            x, y = cx - rng.uniform(0, patch), cy - rng.uniform(0, patch)
    else:
        x, y = rng.uniform(0, max_x + 1), rng.uniform(0, max_y + 1)
    return int(np.clip(x, 0, max_x)), int(np.clip(y, 0, max_y))


def patch_targets(img: MidogImage, x: int, y: int, patch: int, imposters: str) -> dict[str, torch.Tensor]:
    """Boxes (K×4, patch px, clipped) and labels of the figures whose centre lies in the patch."""
    centres = [img.mitoses]
    labels = [np.ones(len(img.mitoses), np.int64)]
    if imposters == "negative":
        centres.append(img.imposters)
        labels.append(np.full(len(img.imposters), 2, np.int64))
    c = np.concatenate(centres) - (x, y)
    lab = np.concatenate(labels)
    inside = (c[:, 0] >= 0) & (c[:, 0] < patch) & (c[:, 1] >= 0) & (c[:, 1] < patch)
    c, lab = c[inside], lab[inside]
    boxes = np.concatenate([c - BOX / 2, c + BOX / 2], axis=1).clip(0, patch)
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.as_tensor(lab)}


class PatchDataset(Dataset):
    """``patches_per_image`` guided patches per training image per epoch: (3×P×P float, target)."""

    def __init__(self, data: Path, images: list[MidogImage], patch: int, patches_per_image: int, imposters: str,
                 centre: bool) -> None:
        self.data, self.images, self.patch = Path(data), images, patch
        self.per_image, self.imposters, self.centre = patches_per_image, imposters, centre
        self._readers: dict[int, SlideReader] = {}

    def __len__(self) -> int:
        return len(self.images) * self.per_image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        img = self.images[i // self.per_image]
        if img.image_id not in self._readers:
            self._readers[img.image_id] = open_slide(self.data / img.file_name)
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        x, y = sample_origin(img, self.patch, rng, centre=self.centre)
        pixels = self._readers[img.image_id].read_region(x, y, 0, self.patch, self.patch)
        if rng.random() < 0.5:  # flips keep box geometry simple to follow
            pixels = pixels[:, ::-1]
            target = patch_targets(img, x, y, self.patch, self.imposters)
            target["boxes"][:, [0, 2]] = self.patch - target["boxes"][:, [2, 0]]
        else:
            target = patch_targets(img, x, y, self.patch, self.imposters)
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0
        return image, target


def collate_detection(items: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [it[0] for it in items], [it[1] for it in items]


@dataclass
class MidogOptions:
    """MIDOG-specific training options."""

    data: Path
    annotations: Path
    backbone: str = "resnet50"
    patch_size: int = 512
    patches_per_image: int = 10
    trainable_layers: int = 5
    pretrained: bool = True
    weights: Path | None = None
    imposters: str = "ignore"
    centre: bool = False
    val_fraction: float = 0.2
    val_ids: Path | None = None
    overlap: float = 0.1


class MidogTrainer(Trainer):
    """RetinaNet on guided patches; best checkpoint by F1 on whole validation images."""

    challenge = "midog"
    monitor = "f1"

    def __init__(self, config: TrainConfig, options: MidogOptions) -> None:
        super().__init__(config, options)
        if options.imposters not in ("ignore", "negative"):
            raise OptionError(f"--imposters {options.imposters}: expected ignore or negative")
        self.options = options
        images = annotated_images(load_midog_json(options.annotations), options.data)
        self.train_images, self.val_images = split_images(images, options.val_fraction, config.seed, options.val_ids)
        console.log(f"{len(self.train_images)} training / {len(self.val_images)} validation image(s);"
                    f" validation ids {[i.image_id for i in self.val_images]}")

    def build_model(self) -> nn.Module:
        o = self.options
        return build_detector(o.backbone, self._num_classes(), o.patch_size, o.pretrained, o.weights, o.trainable_layers)

    def _num_classes(self) -> int:
        return 3 if self.options.imposters == "negative" else 2

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return {"name": "retinanet", "kwargs": {"backbone": o.backbone, "num_classes": self._num_classes(),
                                                "patch_size": o.patch_size, "trainable_layers": o.trainable_layers}}

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        threshold = 0.5 if row is None else float(row.get("threshold", 0.5))
        return {"threshold": threshold, "patch_size": self.options.patch_size, "overlap": self.options.overlap,
                "mitosis_label": 1, "val_ids": [i.image_id for i in self.val_images]}

    def train_loader(self) -> DataLoader:
        o = self.options
        dataset = PatchDataset(o.data, self.train_images, o.patch_size, o.patches_per_image, o.imposters, o.centre)
        return self.loaders.train(dataset, self.config.batch_size, collate_fn=collate_detection)

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = batch
        losses = model(images, targets)
        return losses["classification"] + losses["bbox_regression"]

    def validate(self, model: nn.Module) -> dict[str, float]:
        per_image = []
        for img in self.val_images:
            with open_slide(self.options.data / img.file_name) as reader:
                points, scores = detect_image(model, reader, self.options.patch_size, self.device,
                                              self.config.batch_size, self.options.overlap, self.amp_dtype)
            per_image.append((img.mitoses, points, scores))
        threshold, f1 = best_threshold(per_image)
        at_half = Counts()
        for truth, points, scores in per_image:
            at_half += match_image(truth, points[scores >= 0.5])
        return {"f1": max(f1, 0.0), "threshold": threshold, "f1_at_0.5": at_half.f1,
                "precision_at_0.5": at_half.precision, "recall_at_0.5": at_half.recall}
