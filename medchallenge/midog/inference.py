"""Whole-image inference: deterministic overlapping tiling, batched patches, global NMS by distance."""

from __future__ import annotations

import numpy as np
import torch

from medchallenge.core.device import autocast
from medchallenge.core.inference import batch_slices
from medchallenge.core.wsi import SlideReader


def tile_positions(length: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with patches of ``patch`` px overlapping by ``overlap``
    (a fraction); the last one flush with the border; ``[0]`` when the image is smaller."""
    if length <= patch:
        return [0]
    stride = max(1, int(patch * (1 - overlap)))
    starts = list(range(0, length - patch, stride))
    return starts + [length - patch]


def nms_by_distance(points: np.ndarray, scores: np.ndarray, radius: float = 25.0) -> np.ndarray:
    """Indices kept by greedy suppression: highest score first, drop others within ``radius`` px."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if all(np.hypot(*(points[i] - points[k])) > radius for k in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=int)


@torch.no_grad()
def detect_image(model: torch.nn.Module, reader: SlideReader, patch: int, device: torch.device, batch_size: int = 8,
                 overlap: float = 0.1, dtype: torch.dtype | None = None, label: int = 1,
                 nms_radius: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Detections of class ``label`` on a whole image: (points D×2 x, y in px, scores D).

    Patches are read lazily from the image (only the TIFF tiles they touch) and go through the
    model in batches; each patch's boxes are already NMS-ed by the model; the union is NMS-ed by
    centre distance so a figure seen by two overlapping patches counts once.
    """
    width, height = reader.level_dimensions[0]
    origins = [(x, y) for y in tile_positions(height, patch, overlap) for x in tile_positions(width, patch, overlap)]
    points, scores = [], []
    for batch in batch_slices(len(origins), batch_size):
        chunk = origins[batch]
        images = [torch.from_numpy(reader.read_region(x, y, 0, patch, patch)).permute(2, 0, 1).to(device).float() / 255
                  for x, y in chunk]
        with autocast(device, dtype):
            outputs = model(images)
        for (x, y), out in zip(chunk, outputs):
            keep = out["labels"] == label
            boxes = out["boxes"][keep].float().cpu().numpy()
            if len(boxes):
                centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 + x, (boxes[:, 1] + boxes[:, 3]) / 2 + y], 1)
                inside = (centres[:, 0] < width) & (centres[:, 1] < height)
                points.append(centres[inside])
                scores.append(out["scores"][keep].float().cpu().numpy()[inside])
    if not points:
        return np.zeros((0, 2)), np.zeros(0)
    all_points, all_scores = np.concatenate(points), np.concatenate(scores)
    keep = nms_by_distance(all_points, all_scores, nms_radius)
    return all_points[keep], all_scores[keep]
