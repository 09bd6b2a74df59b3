"""BraTS regions and Dice; LiTS liver/tumour Dice per case and global.

BraTS: WT = {1, 2, 4}, TC = {1, 4}, ET = {4}; the BraTS convention for an empty region: both
prediction and truth empty → 1, prediction only (or truth only) → 0.
"""

from __future__ import annotations

import numpy as np

from medchallenge.core.metrics import dice, dice_counts

REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}


def region_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``{"wt_dice", "tc_dice", "et_dice"}`` of two label volumes in BraTS values {0,1,2,4}."""
    return {f"{name}_dice": dice(np.isin(pred, labels), np.isin(truth, labels), empty=1.0)
            for name, labels in REGIONS.items()}


def lits_case_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """(|P∩T|, |P|, |T|) of liver (label ≥ 1) and tumour (label == 2)."""
    return {"liver": dice_counts(pred >= 1, truth >= 1), "tumor": dice_counts(pred == 2, truth == 2)}


def dice_from_counts(inter: int, p: int, t: int, empty: float = float("nan")) -> float:
    return empty if p + t == 0 else 2 * inter / (p + t)
