"""KiTS19's official metric: kidney Dice (label > 0) and tumour Dice (label > 1) per case.

As in the KiTS19 starter code: kidney Dice compares ``pred > 0`` with ``gt > 0`` (kidney and
tumour together), tumour Dice ``pred > 1`` with ``gt > 1``; the leaderboard ranks by their mean
(the composite). Every KiTS19 case holds both, so the starter code never meets an empty region;
here a region empty in both prediction and truth gives NaN and is left out of means (MONAI's
``ignore_empty``), and an empty prediction against a non-empty truth gives 0. The report's pixel
accuracy (share of voxels with the right label) is reported beside.

All counts come from one 3×3 confusion matrix per case, accumulated over chunks of slices, so
evaluating a 611×512×512 case needs no float or one-hot copies of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medchallenge.core.metrics import region_dice


def confusion_3x3(pred: np.ndarray, truth: np.ndarray, chunk: int = 16_777_216) -> np.ndarray:
    """Counts (3×3, rows truth, columns prediction) of two uint8 label arrays of one shape."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    p, t = pred.reshape(-1), truth.reshape(-1)
    counts = np.zeros(9, dtype=np.int64)
    for start in range(0, p.size, chunk):
        code = t[start : start + chunk].astype(np.uint8) * np.uint8(3) + p[start : start + chunk].astype(np.uint8)
        counts += np.bincount(code, minlength=9)[:9]
    return counts.reshape(3, 3)


@dataclass
class CaseScore:
    """One case's scores and counts."""

    case: str
    kidney_dice: float
    tumor_dice: float
    pixel_accuracy: float
    confusion: np.ndarray  # 3×3, rows truth, columns prediction

    @property
    def composite_dice(self) -> float:
        """Mean of the defined Dice values; NaN when both are undefined (explicit: no numpy warning)."""
        defined = [v for v in (self.kidney_dice, self.tumor_dice) if np.isfinite(v)]
        return float(sum(defined) / len(defined)) if defined else float("nan")

    def as_dict(self) -> dict:
        truth = self.confusion.sum(axis=1)
        return {"case": self.case, "kidney_dice": self.kidney_dice, "tumor_dice": self.tumor_dice,
                "composite_dice": self.composite_dice, "pixel_accuracy": self.pixel_accuracy,
                "truth_voxels": {"0": int(truth[0]), "1": int(truth[1]), "2": int(truth[2])}}


def _region_dice(cm: np.ndarray, first: int) -> float:
    """Dice of labels >= ``first`` (kidney: 1, tumour: 2); NaN when empty on both sides (starter code)."""
    return region_dice(cm, range(first, cm.shape[0]), empty=float("nan"))


def score_case(case: str, pred: np.ndarray, truth: np.ndarray) -> CaseScore:
    """Kidney Dice, tumour Dice and pixel accuracy of one case (uint8 label volumes)."""
    cm = confusion_3x3(pred, truth)
    return CaseScore(case, _region_dice(cm, 1), _region_dice(cm, 2), float(np.trace(cm) / max(1, cm.sum())), cm)


def summarise(scores: list[CaseScore]) -> dict:
    """Means over cases (NaN cases left out) and the per-case list, as ``evaluate --json`` prints."""

    def mean(key: str) -> float:
        values = [getattr(s, key) for s in scores]
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    return {
        "kidney_dice": mean("kidney_dice"),
        "tumor_dice": mean("tumor_dice"),
        "composite_dice": mean("composite_dice"),
        "pixel_accuracy": mean("pixel_accuracy"),
        "n": len(scores),
        "cases": [s.as_dict() for s in scores],
    }
