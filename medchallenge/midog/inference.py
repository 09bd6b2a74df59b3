"""Whole-image inference: deterministic overlapping tiling, batched patches, global NMS by distance;
test-time augmentation (the 8 dihedral views of each patch) and the distance-weighted merge that
combines views and ensemble members."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medchallenge.core.device import autocast
from medchallenge.core.inference import batch_slices
from medchallenge.core.wsi import SlideReader
from medchallenge.midog.nms import nms_by_distance  # noqa: F401  (re-exported: tests and callers import it here)


def tile_positions(length: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with patches of ``patch`` px overlapping by ``overlap``
    (a fraction); the last one flush with the border; ``[0]`` when the image is smaller."""
    if length <= patch:
        return [0]
    stride = max(1, int(patch * (1 - overlap)))
    starts = list(range(0, length - patch, stride))
    return starts + [length - patch]


def dihedral(image: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (0–7) of a C×P×P patch: ``view % 4`` quarter turns (np.rot90's sense), then a
    left-right flip when ``view >= 4``. View 0 is the patch itself."""
    out = torch.rot90(image, view % 4, dims=(-2, -1))
    return out.flip(-1) if view >= 4 else out


def points_back(points: np.ndarray, view: int, size: int) -> np.ndarray:
    """Map D×2 (x, y) points found in :func:`dihedral` view ``view`` of a size×size patch back to the
    patch itself, in continuous px (pixel i spans [i, i+1), as box coordinates are)."""
    x, y = np.asarray(points, float).reshape(-1, 2).T
    if view >= 4:  # undo the flip first (it was applied last)
        x = size - x
    for _ in range(view % 4):  # undo one quarter turn: a turn maps (x, y) to (y, size - x)
        x, y = size - y, x
    return np.stack([x, y], 1)


def merge_detections(sets: Sequence[tuple[np.ndarray, np.ndarray]], radius: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge the detections of ``len(sets)`` models (or TTA views) of one image by distance.

    Highest score first: a detection takes, from each other set, that set's best unused detection
    within ``radius`` px; the group becomes one point at the score-weighted mean position with
    score = sum of its scores / number of sets (a figure one model of two misses keeps half its
    score). Points farther apart stay separate. Returns (points D×2, scores D), best first.
    """
    n = len(sets)
    points = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p, _ in sets] + [np.zeros((0, 2))])
    scores = np.concatenate([np.asarray(s, float).reshape(-1) for _, s in sets] + [np.zeros(0)])
    source = np.concatenate([np.full(len(s), k) for k, (_, s) in enumerate(sets)] + [np.zeros(0, int)])
    used = np.zeros(len(scores), bool)
    merged, merged_scores = [], []
    for i in np.argsort(-scores, kind="stable"):
        if used[i]:
            continue
        group = [i]
        dist = np.hypot(*(points - points[i]).T)
        for k in range(n):
            near = np.flatnonzero((source == k) & ~used & (dist <= radius) & (np.arange(len(scores)) != i))
            if k != source[i] and len(near):
                group.append(int(near[np.argmax(scores[near])]))
        used[group] = True
        w = scores[group]
        # relative to the seed point: identical points merge to exactly that point (bit for bit)
        shift = (w[:, None] * (points[group] - points[i])).sum(0) / w.sum() if w.sum() > 0 else 0.0
        merged.append(points[i] + shift)
        merged_scores.append(w.sum() / n)
    if not merged:
        return np.zeros((0, 2)), np.zeros(0)
    order = np.argsort(-np.asarray(merged_scores), kind="stable")
    return np.asarray(merged)[order], np.asarray(merged_scores)[order]


@torch.no_grad()
def detect_views(model: torch.nn.Module, reader: SlideReader, patch: int, device: torch.device, batch_size: int = 8,
                 overlap: float = 0.1, dtype: torch.dtype | None = None, views: Sequence[int] = (0,),
                 label: int = 1, nms_radius: float = 25.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detections of class ``label`` on a whole image, one set per :func:`dihedral` view:
    [(points D×2 x, y in px, scores D)] in ``views``' order.

    Patches are read lazily from the image (only the TIFF tiles they touch) and go through the
    model in batches, each view of a batch in turn; each patch's boxes are already NMS-ed by the
    model and their centres mapped back from the view; each view's union is NMS-ed by centre
    distance so a figure seen by two overlapping patches counts once.
    """
    width, height = reader.level_dimensions[0]
    origins = [(x, y) for y in tile_positions(height, patch, overlap) for x in tile_positions(width, patch, overlap)]
    found: list[tuple[list, list]] = [([], []) for _ in views]
    for batch in batch_slices(len(origins), batch_size):
        chunk = origins[batch]
        images = [torch.from_numpy(reader.read_region(x, y, 0, patch, patch)).permute(2, 0, 1).to(device).float() / 255
                  for x, y in chunk]
        for k, view in enumerate(views):
            with autocast(device, dtype):
                outputs = model([dihedral(im, view) for im in images])
            for (x, y), out in zip(chunk, outputs):
                keep = out["labels"] == label
                boxes = out["boxes"][keep].float().cpu().numpy()
                if len(boxes):
                    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
                    centres = points_back(centres, view, patch) + (x, y)
                    inside = (centres[:, 0] < width) & (centres[:, 1] < height)
                    found[k][0].append(centres[inside])
                    found[k][1].append(out["scores"][keep].float().cpu().numpy()[inside])
    result = []
    for points, scores in found:
        if not points:
            result.append((np.zeros((0, 2)), np.zeros(0)))
            continue
        all_points, all_scores = np.concatenate(points), np.concatenate(scores)
        keep_idx = nms_by_distance(all_points, all_scores, nms_radius)
        result.append((all_points[keep_idx], all_scores[keep_idx]))
    return result


def detect_image(model: torch.nn.Module, reader: SlideReader, patch: int, device: torch.device, batch_size: int = 8,
                 overlap: float = 0.1, dtype: torch.dtype | None = None, label: int = 1,
                 nms_radius: float = 25.0, tta: bool = False, radius: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Detections of class ``label`` on a whole image: (points D×2 x, y in px, scores D).

    With ``tta``, the 8 dihedral views of every patch, their detections mapped back and merged
    like an ensemble (:func:`merge_detections` within ``radius`` px: score = sum / 8).
    """
    views = range(8) if tta else (0,)
    sets = detect_views(model, reader, patch, device, batch_size, overlap, dtype, views, label, nms_radius)
    return merge_detections(sets, radius) if tta else sets[0]
