"""Small RGB previews of predictions for TensorBoard: an image with label outlines, side by side.

Every challenge's ``Trainer.preview_images`` builds its images from these, so an overlay looks
the same everywhere: the image in grey, labels as translucent colours (1 red, 2 green, 3 blue,
4 yellow, ...), truth on the left and prediction on the right.
"""

from __future__ import annotations

import numpy as np

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240]], dtype=np.float32)


def to_grey(image: np.ndarray) -> np.ndarray:
    """H×W (any range) or H×W×3 image → H×W×3 uint8, contrast stretched between the 1st and 99th percentile."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)  # C×H×W → H×W×C
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    scaled = np.clip((image - low) / max(float(high - low), 1e-6), 0, 1) * 255
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=-1)
    elif scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return scaled.astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H×W or H×W×3) with ``labels`` (H×W ints, 0 = background) blended in; H×W×3 uint8."""
    rgb = to_grey(image).astype(np.float32)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64) % len(PALETTE)
        colour = PALETTE[labels]
        mask = (labels > 0)[..., None]
        rgb = np.where(mask, (1 - alpha) * rgb + alpha * colour, rgb)
    return rgb.astype(np.uint8)


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """H×W×3 uint8 images next to each other (heights padded to the tallest), white gaps between."""
    height = max(im.shape[0] for im in images)
    padded = [np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0))) for im in images]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, im in enumerate(padded):
        parts.extend([spacer, im] if i else [im])
    return np.concatenate(parts, axis=1)


def truth_and_prediction(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The usual segmentation preview: truth overlaid (left) next to the prediction overlaid (right)."""
    return side_by_side(overlay(image, truth), overlay(image, prediction))
