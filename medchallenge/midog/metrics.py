"""MIDOG's official F1: greedy one-to-one matching of detections to mitoses within 30 px.

The rule of evalutils ``score_detection`` (used by DeepMicroscopy/MIDOG_evaluation_docker
``evaluation.py``): for each ground-truth mitosis (category 1 only) in order, the nearest unused
detection within the radius (distance <= radius) is a true positive, else the mitosis is a false
negative; every detection left unused is a false positive (a detection on an imposter, category 2,
is therefore a false positive). TP, FP and FN are summed over images; precision = TP/(TP+FP),
recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN). A ratio whose denominator is 0 is undefined (NaN,
``null`` in JSON): the MIDOG 2021 container divides without a guard and stops there, so no
number is made up (e.g. no detections and no mitoses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def _ratio(num: int, denom: int) -> float:
    # plain Python division: no numpy warning, and 0/0 is undefined rather than 0 or 1
    return num / denom if denom else math.nan


@dataclass
class Counts:
    """Summed TP/FP/FN and the scores they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    @property
    def precision(self) -> float:
        """TP/(TP+FP); NaN without detections."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP/(TP+FN); NaN without ground-truth mitoses."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2TP/(2TP+FP+FN); NaN with neither detections nor mitoses."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


def match_image(truth: np.ndarray, detections: np.ndarray, radius: float = 30.0) -> Counts:
    """Greedy matching on one image. ``truth``: M×2 mitosis centres; ``detections``: D×2 (x, y)."""
    truth = np.asarray(truth, dtype=float).reshape(-1, 2)
    detections = np.asarray(detections, dtype=float).reshape(-1, 2)
    used = np.zeros(len(detections), dtype=bool)
    tp = 0
    for point in truth:
        if not len(detections):
            break
        dist = np.hypot(*(detections - point).T)
        dist[used] = np.inf
        best = int(np.argmin(dist))
        if dist[best] <= radius:
            used[best] = True
            tp += 1
    return Counts(tp=tp, fp=int((~used).sum()), fn=len(truth) - tp)


def best_threshold(per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]], radius: float = 30.0) -> tuple[float, float]:
    """The score threshold maximising summed F1 over (truth, detection points, scores) per image."""
    scores = np.unique(np.concatenate([s for _, _, s in per_image] + [np.zeros(0)]))
    best = (0.5, -1.0)
    for threshold in np.concatenate([[0.05], scores])[:: max(1, len(scores) // 200)]:
        total = Counts()
        for truth, points, s in per_image:
            total += match_image(truth, points[s >= threshold], radius)
        if total.f1 > best[1]:
            best = (float(threshold), total.f1)
    return best


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The official F1 of pooled out-of-fold rows (one per validation image: ``tp``, ``fp``, ``fn`` at
    its fold's tuned threshold): TP/FP/FN summed, then the ratios (NaN where a denominator is 0)."""
    total = Counts(int(oof["tp"].sum()), int(oof["fp"].sum()), int(oof["fn"].sum()))
    return {"f1": total.f1, "precision": total.precision, "recall": total.recall, "tp": total.tp, "fp": total.fp,
            "fn": total.fn}
