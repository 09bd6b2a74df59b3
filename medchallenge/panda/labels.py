"""PANDA mask labels: the two label schemes, the classifier's mask channel, pixel scores.

Label schemes (``--label-scheme``):

- ``provider``: each provider's own labels, one model per provider (the report's way).
  Radboud 0 background, 1 stroma, 2 benign epithelium, 3/4/5 Gleason 3/4/5; Karolinska 0
  background, 1 benign tissue, 2 cancer.
- ``unified``: one map for both, 0 background, 1 benign (Radboud 1, 2; Karolinska 1), 2 cancer
  (Radboud 3, 4, 5; Karolinska 2).

The classifier's mask channel is ``label × 255 / (K − 1)`` as uint8, K the scheme's classes for
the slide's provider: ×255/5 for Radboud and ×255/2 for Karolinska (the report's scaling), ×255/2
for the unified scheme — so the mask sits in the images' range.

The bottom of panda's import graph for masks (no torch): unet, masks, segpredict, segtrain,
train and metrics read it; it reads only ``data`` and core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medchallenge.core.errors import OptionError
from medchallenge.core.metrics import dice_per_class, region_dice
from medchallenge.panda.data import MASK_CLASSES, PROVIDERS

SCHEMES = ("provider", "unified")
UNIFIED_FROM = {"radboud": np.array([0, 1, 1, 2, 2, 2], np.uint8), "karolinska": np.array([0, 1, 2], np.uint8)}
CLASS_NAMES = {
    "radboud": ("background", "stroma", "benign epithelium", "Gleason 3", "Gleason 4", "Gleason 5"),
    "karolinska": ("background", "benign", "cancer"),
    "unified": ("background", "benign", "cancer"),
}
COLOURS = {1: (60, 170, 60), 2: (40, 110, 230), 3: (250, 200, 0), 4: (250, 120, 0), 5: (220, 20, 20)}
"""Overlay colour per label (3 classes: 1 benign green, 2 cancer blue)."""


def check_scheme(scheme: str, provider: str) -> tuple[str, ...]:
    """Validate ``--label-scheme``/``--provider``; returns the providers covered."""
    if scheme not in SCHEMES:
        raise OptionError(f"--label-scheme {scheme}: expected one of {', '.join(SCHEMES)}")
    if provider not in (*PROVIDERS, "both"):
        raise OptionError(f"--provider {provider}: expected radboud, karolinska or both")
    if scheme == "provider" and provider == "both":
        raise OptionError("--label-scheme provider trains one model per provider: give --provider radboud or"
                          " karolinska, or use --label-scheme unified for one model on both")
    return PROVIDERS if provider == "both" else (provider,)


def n_classes(scheme: str, provider: str) -> int:
    """Classes of ``provider``'s masks in ``scheme`` (Radboud 6 / Karolinska 3 / unified 3)."""
    return 3 if scheme == "unified" else MASK_CLASSES[provider]


def class_names(scheme: str, provider: str) -> tuple[str, ...]:
    return CLASS_NAMES["unified" if scheme == "unified" else provider]


def tumour_labels(scheme: str, provider: str) -> tuple[int, ...]:
    """The labels that mean cancer: Radboud 3–5 in its own scheme, else 2."""
    return (3, 4, 5) if scheme == "provider" and provider == "radboud" else (2,)


def to_scheme(masks: np.ndarray, provider: str, scheme: str) -> np.ndarray:
    """Provider labels (any shape, uint8) → labels of ``scheme``."""
    if scheme == "provider":
        return masks
    return UNIFIED_FROM[provider][masks]


def channel_lut(scheme: str, provider: str) -> np.ndarray:
    """Label → mask-channel value, ``round(label · 255 / (K − 1))`` (K uint8 values)."""
    k = n_classes(scheme, provider)
    return np.round(np.arange(k) * 255.0 / (k - 1)).astype(np.uint8)


def mask_channel(labels: np.ndarray, provider: str, scheme: str) -> np.ndarray:
    """Labels in ``scheme`` → the classifier's uint8 mask channel."""
    return channel_lut(scheme, provider)[labels]


def mask_scores(matrix: np.ndarray, scheme: str, provider: str) -> dict[str, Any]:
    """Scores of a K×K pixel confusion matrix (rows truth, columns prediction).

    Returns ``pixels``, ``pixel_accuracy``, ``dice`` (per class, NaN for a class in neither),
    ``mean_dice`` (over the foreground classes, NaN when none is scored), ``tumour_dice`` (the
    tumour labels merged into one class, NaN when absent from both) and ``tumour_pixels``.
    """
    matrix = np.asarray(matrix)
    dice = dice_per_class(matrix)
    tumour = list(tumour_labels(scheme, provider))
    foreground = dice[1:]
    return {
        "pixels": int(matrix.sum()),
        "pixel_accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "dice": dice,
        "mean_dice": float(np.nanmean(foreground)) if np.isfinite(foreground).any() else float("nan"),
        "tumour_dice": region_dice(matrix, tumour, empty=float("nan")),
        "tumour_pixels": int(matrix[tumour].sum()),
    }
