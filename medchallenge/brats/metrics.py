"""BraTS region Dice, per label convention.

Regions: 2021 WT = {1, 2, 4}, TC = {1, 4}, ET = {4}; 2023 WT = {1, 2, 3}, TC = {1, 3}, ET = {3}
(:mod:`medchallenge.brats.data`). Empty region, as both organisers' codes score it (the classic
2013–2021 rule, and the "Legacy_Dice" of the 2023 metrics, rachitsaluja/BraTS-2023-Metrics
``brats_2023_metrics/surface_distance/brats_metrics.py``): prediction and truth both empty → 1;
one of them empty → 0 (the ordinary Dice formula).
"""

from __future__ import annotations

import numpy as np

from medchallenge.brats.data import BRATS2021, CONVENTIONS
from medchallenge.core.metrics import dice

REGIONS = BRATS2021.regions
"""The 2021 regions, which are also the model's class indices."""


def region_dice(pred: np.ndarray, truth: np.ndarray, convention: str = BRATS2021.name) -> dict[str, float]:
    """``{"wt_dice", "tc_dice", "et_dice"}`` of two label volumes (same shape) of ``convention``."""
    regions = CONVENTIONS[convention].regions
    return {f"{name}_dice": dice(np.isin(pred, labels), np.isin(truth, labels), empty=1.0)
            for name, labels in regions.items()}
