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
import pandas as pd

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


REGIONS = {"kidney": 1, "tumor": 2}  # region → the smallest label it holds (kidney: label > 0, tumour: label > 1)


def region_counts(cm: np.ndarray, first: int) -> tuple[int, int, int]:
    """(tp, fp, fn) voxels of the region of labels >= ``first`` from a 3×3 confusion matrix (rows truth)."""
    truth, pred = cm[first:].sum(), cm[:, first:].sum()
    tp = int(cm[first:, first:].sum())
    return tp, int(pred - tp), int(truth - tp)


def oof_row(score: CaseScore) -> dict:
    """One validation case for RUN/oof.csv: its Dice values and, per region, tp/fp/fn voxel counts."""
    row: dict = {"id": score.case, "kidney_dice": score.kidney_dice, "tumor_dice": score.tumor_dice,
                 "composite_dice": score.composite_dice}
    for region, first in REGIONS.items():
        row.update(zip((f"{region}_tp", f"{region}_fp", f"{region}_fn"), region_counts(score.confusion, first)))
    return row


def _dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Dice 2tp / (2tp + fp + fn) per element; NaN where the region is empty in both (the starter code)."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.full(tp.shape, np.nan), where=denominator > 0)


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The KiTS score of pooled out-of-fold rows (:func:`oof_row`), recomputed from the voxel counts.

    ``composite_dice`` (first: the leaderboard's ranking) is the mean over cases of each case's mean
    of kidney and tumour Dice, NaN values left out as in :func:`summarise`; ``kidney_dice`` and
    ``tumor_dice`` are means over cases; ``global_*_dice`` pool the voxel counts of every case
    (the Dice of all cases as one volume, LiTS' "global Dice").
    """
    dice = {region: _dice(oof[f"{region}_tp"], oof[f"{region}_fp"], oof[f"{region}_fn"]) for region in REGIONS}
    pair = np.stack([dice["kidney"], dice["tumor"]])
    defined = np.isfinite(pair).sum(axis=0)
    composite = np.divide(np.nansum(pair, axis=0), defined, out=np.full(defined.shape, np.nan), where=defined > 0)
    result = {"composite_dice": _finite_mean(composite), "kidney_dice": _finite_mean(dice["kidney"]),
              "tumor_dice": _finite_mean(dice["tumor"])}
    for region in REGIONS:
        pooled = _dice(*(np.array([oof[f"{region}_{k}"].sum()]) for k in ("tp", "fp", "fn")))
        result[f"global_{region}_dice"] = float(pooled[0])
    return result


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
