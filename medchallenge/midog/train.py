"""Training RetinaNet on patches with guided sampling; validation on whole images by F1.

Guided sampling (training only): with probability ``p_mitosis`` (0.5) a patch contains a random
mitotic figure of the image — at a random position inside the patch, or centred with
``--centre`` — else it is uniform over the image; patches always lie within the image (an image
smaller than a patch is padded white); images without mitoses always sample uniformly. Patches
are read lazily from the TIFF. Validation runs the deterministic whole-image tiling of
``predict`` and picks the score threshold that maximises F1 on the validation images; that
threshold is stored in the checkpoint (``predict --threshold auto``). Validation goes through the
engine's per-batch hooks: the validation loader yields image indices, ``validation_step`` detects on
those whole images, ``aggregate_validation`` picks the threshold.

Images are read from ``--cache`` (the tiled copies ``midog tile`` writes, checked to be such a
cache) when given, else straight from ``--data``.
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
from medchallenge.core.cache import CacheDir
from medchallenge.core.engine import TrainConfig, Trainer
from medchallenge.core.errors import OptionError
from medchallenge.core.wsi import SlideReader, open_slide
from medchallenge.midog.data import MidogImage, annotated_images, load_midog_json, val_ids_split
from medchallenge.midog.inference import detect_image
from medchallenge.midog.metrics import Counts, best_threshold, match_image
from medchallenge.midog.models import MODELS, freeze_backbone, load_coco_backbone
from medchallenge.midog.tiling import CACHE_KIND

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


def point_labels(truth: np.ndarray, found: np.ndarray, size: int, radius: float = 20.0) -> np.ndarray:
    """A size×size label map for :func:`medchallenge.core.preview.overlay`: a 3 px ring of ``radius``
    around each truth point (2, green) and a 9 px square on each detection (1, red); points in px."""
    labels = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for x, y in np.asarray(truth, float).reshape(-1, 2):
        d = np.hypot(xx - x, yy - y)
        labels[(d >= radius - 1.5) & (d <= radius + 1.5)] = 2
    for x, y in np.asarray(found, float).reshape(-1, 2):
        labels[max(0, int(y) - 4):int(y) + 5, max(0, int(x) - 4):int(x) + 5] = 1
    return labels


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


class ImageIndices(Dataset):
    """The validation images as indices: whole-image detection reads the TIFF itself, patch by patch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class MidogOptions:
    """MIDOG-specific training options (recorded in config.json and the checkpoints by the engine)."""

    data: Path
    annotations: Path | None = None
    cache: Path | None = None
    model: str = "resnet50"
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

    @property
    def images(self) -> Path:
        """The folder the TIFFs are read from: the tile cache when given, else the data folder."""
        return self.cache if self.cache is not None else self.data


class MidogTrainer(Trainer):
    """RetinaNet on guided patches; best checkpoint by F1 on whole validation images."""

    challenge = "midog"
    monitor = "f1"
    registry = MODELS

    def __init__(self, config: TrainConfig, options: MidogOptions) -> None:
        super().__init__(config, options)
        if options.imposters not in ("ignore", "negative"):
            raise OptionError(f"--imposters {options.imposters}: expected ignore or negative")
        if options.cache is not None:
            CacheDir(options.cache, CACHE_KIND).settings()  # a DataError unless `midog tile` made it
        self.options = options
        annotations = options.annotations or options.images / "MIDOG.json"
        images = annotated_images(load_midog_json(annotations), options.images)
        self._threshold = 0.5
        if options.val_ids is not None:
            if config.n_folds is not None:
                raise OptionError("--val-ids and --n-folds: give one way to choose the validation images")
            self.train_images, self.val_images = val_ids_split(images, options.val_ids)
        else:  # grouped by image, stratified by scanner; fold --fold of --n-folds, else --val-fraction
            train, val = self.split_items([img.image_id for img in images], [img.scanner for img in images],
                                          options.val_fraction)
            self.train_images, self.val_images = [images[i] for i in train], [images[i] for i in val]
        console.log(f"{len(self.train_images)} training / {len(self.val_images)} validation image(s);"
                    f" validation ids {[i.image_id for i in self.val_images]}")

    def _num_classes(self) -> int:
        return 3 if self.options.imposters == "negative" else 2

    def model_spec(self) -> dict[str, Any]:
        o = self.options
        return {"name": "retinanet", "kwargs": {"backbone": o.model, "num_classes": self._num_classes(),
                                                "patch_size": o.patch_size, "trainable_layers": o.trainable_layers,
                                                # from scratch, the ResNet18 needs a real normalisation
                                                **({"norm": "group"} if o.model == "resnet18" else {})}}

    def prepare_model(self, model: nn.Module) -> None:
        o = self.options
        if o.pretrained or o.weights is not None:
            load_coco_backbone(model, o.model, o.weights)
        if o.model == "resnet50":  # the ResNet18 body is frozen by its builder
            freeze_backbone(model, o.trainable_layers)

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        threshold = 0.5 if row is None else float(row.get("threshold", 0.5))
        return {"threshold": threshold, "patch_size": self.options.patch_size, "overlap": self.options.overlap,
                "mitosis_label": 1, "val_ids": [i.image_id for i in self.val_images]}

    def train_loader(self) -> DataLoader:
        o = self.options
        dataset = PatchDataset(o.images, self.train_images, o.patch_size, o.patches_per_image, o.imposters, o.centre)
        return self.loaders.train(dataset, self.config.batch_size, collate_fn=collate_detection)

    def batch_samples(self, batch: Any) -> int:
        """Patches in a detection batch (a list of 3×P×P images and a list of targets), for samples/s."""
        return len(batch[0])

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = batch
        losses = model(images, targets)
        return losses["classification"] + losses["bbox_regression"]

    def val_loader(self) -> DataLoader:
        return self.loaders.eval(ImageIndices(len(self.val_images)), 1, collate_fn=list)

    def validation_step(self, model: nn.Module, batch: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Whole-image detection of each image in the batch: (truth, points, scores) per image."""
        out = []
        for i in batch:
            img = self.val_images[i]
            with open_slide(self.options.images / img.file_name) as reader:
                points, scores = detect_image(model, reader, self.options.patch_size, self.device,
                                              self.config.batch_size, self.options.overlap, self.amp_dtype)
            out.append((img.mitoses, points, scores))
        return out

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """One row per validation image with best.pt's weights: TP/FP/FN at its tuned threshold (what
        ``cv_score`` pools), the numbers of mitoses and of detections, the threshold and the scanner."""
        from medchallenge.core.checkpoint import load_checkpoint

        threshold = float(load_checkpoint(self.run_dir / "best.pt")["meta"]["threshold"])
        rows = []
        for truth, points, scores in self.validation_step(model, list(range(len(self.val_images)))):
            kept = points[scores >= threshold]
            rows.append(match_image(truth, kept).as_dict() | {"n_truth": len(truth), "n_detections": len(kept)})
        return [{"id": str(img.image_id), **{k: row[k] for k in ("tp", "fp", "fn", "n_truth", "n_detections")},
                 "threshold": threshold, "scanner": img.scanner} for img, row in zip(self.val_images, rows)]

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """Up to 3 validation patches around a mitosis: truth rings (green) and detections at the tuned
        threshold (red squares), H×W×3 uint8 under ``preview/<image id>``."""
        from medchallenge.core.preview import overlay

        previews = {}
        for img in [i for i in self.val_images if len(i.mitoses)][:3]:
            patch = self.options.patch_size
            cx, cy = img.mitoses[0]
            x0 = int(np.clip(cx - patch / 2, 0, max(0, img.width - patch)))
            y0 = int(np.clip(cy - patch / 2, 0, max(0, img.height - patch)))
            with open_slide(self.options.images / img.file_name) as reader:
                pixels = reader.read_region(x0, y0, 0, patch, patch)
            image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div(255).to(self.device)
            out = model([image])[0]
            keep = (out["labels"] == 1) & (out["scores"] >= self._threshold)
            boxes = out["boxes"][keep].float().cpu().numpy()
            found = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
            previews[f"{img.image_id:03d}"] = overlay(pixels, point_labels(img.mitoses - (x0, y0), found, patch))
        return previews

    def aggregate_validation(self, outputs: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]) -> dict[str, float]:
        """F1 at the best threshold (stored for ``predict --threshold auto``) and the scores at 0.5."""
        per_image = [item for batch in outputs for item in batch]
        threshold, f1 = best_threshold(per_image)
        self._threshold = threshold  # for preview_images
        at_half = Counts()
        for truth, points, scores in per_image:
            at_half += match_image(truth, points[scores >= 0.5])
        return {"f1": max(f1, 0.0), "threshold": threshold, "f1_at_0.5": at_half.f1,
                "precision_at_0.5": at_half.precision, "recall_at_0.5": at_half.recall}
