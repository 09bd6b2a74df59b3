"""BraTS region Dice, per label convention.

Regions: 2021 WT = {1, 2, 4}, TC = {1, 4}, ET = {4}; 2023 WT = {1, 2, 3}, TC = {1, 3}, ET = {3}
(:mod:`medchallenge.brats.data`). Empty region, as both organisers' codes score it (the classic
2013–2021 rule, and the "Legacy_Dice" of the 2023 metrics, rachitsaluja/BraTS-2023-Metrics
``brats_2023_metrics/surface_distance/brats_metrics.py``): prediction and truth both empty → 1;
one of them empty → 0 (the ordinary Dice formula).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medchallenge.brats.data import BRATS2021, CONVENTIONS
from medchallenge.core.metrics import dice, dice_counts, dice_from_counts

REGIONS = BRATS2021.regions
"""The 2021 regions, which are also the model's class indices."""


def region_dice(pred: np.ndarray, truth: np.ndarray, convention: str = BRATS2021.name) -> dict[str, float]:
    """``{"wt_dice", "tc_dice", "et_dice"}`` of two label volumes (same shape) of ``convention``."""
    regions = CONVENTIONS[convention].regions
    return {f"{name}_dice": dice(np.isin(pred, labels), np.isin(truth, labels), empty=1.0)
            for name, labels in regions.items()}


REGION_KEYS = ("wt_dice", "tc_dice", "et_dice")


def region_counts(pred: np.ndarray, truth: np.ndarray, convention: str = BRATS2021.name) -> dict[str, int]:
    """Voxel counts per region: ``{r}_inter`` |P∩T|, ``{r}_pred`` |P|, ``{r}_truth`` |T| for r in wt, tc, et."""
    out = {}
    for name, labels in CONVENTIONS[convention].regions.items():
        inter, size_p, size_t = dice_counts(np.isin(pred, labels), np.isin(truth, labels))
        out.update({f"{name}_inter": inter, f"{name}_pred": size_p, f"{name}_truth": size_t})
    return out


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The BraTS score of pooled out-of-fold rows: per-case Dice of each region from the voxel counts
    (both empty → 1, as :func:`region_dice`), averaged over cases as the organisers' ranking does;
    ``mean_dice`` (first) is the mean of the three. Also each region's global Dice (counts summed)."""
    out: dict[str, float] = {}
    for name in ("wt", "tc", "et"):
        inter, size = oof[f"{name}_inter"], oof[f"{name}_pred"] + oof[f"{name}_truth"]
        per_case = [dice_from_counts(i, n, empty=1.0) for i, n in zip(inter, size)]
        out[f"{name}_dice"] = float(np.mean(per_case))
        out[f"{name}_dice_global"] = dice_from_counts(float(inter.sum()), float(size.sum()), empty=1.0)
    return {"mean_dice": float(np.mean([out[k] for k in REGION_KEYS])), **out}
