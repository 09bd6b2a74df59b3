"""Metrics shared by several challenges, exactly as the challenges define them.

Challenge-specific rules (which labels form a region, how empty cases count, how cases are
averaged) live in each challenge's ``metrics.py`` and call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(truth: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes × n_classes), rows truth, columns prediction; labels 0..n_classes-1."""
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    for name, arr in (("truth", truth), ("prediction", pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} labels outside 0..{n_classes - 1}")
    return np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def quadratic_weighted_kappa(truth: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, n_classes: int) -> float:
    """Cohen's kappa with quadratic weights over labels 0..n_classes-1 (PANDA's metric).

    kappa = 1 - sum(W*O) / sum(W*E), W_ij = (i-j)^2 / (n-1)^2, O the confusion matrix, E the outer
    product of its marginals scaled to O's total. Equals scikit-learn's
    ``cohen_kappa_score(weights="quadratic", labels=range(n))``; 1.0 when both agree perfectly,
    and 0.0 when the expected disagreement is zero (all one class on both sides, but disagreeing).
    """
    observed = confusion_matrix(truth, pred, n_classes).astype(np.float64)
    total = observed.sum()
    if total == 0:
        return float("nan")
    idx = np.arange(n_classes)
    weights = (idx[:, None] - idx[None, :]) ** 2 / max(1, (n_classes - 1) ** 2)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    denom = (weights * expected).sum()
    if denom == 0:
        return 1.0 if (weights * observed).sum() == 0 else 0.0
    return float(1.0 - (weights * observed).sum() / denom)


def balanced_accuracy(truth: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    """Mean of per-class recall over the classes present in ``truth`` (scikit-learn's definition)."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    classes = np.unique(truth)
    if classes.size == 0:
        return float("nan")
    recalls = [float(np.mean(pred[truth == c] == c)) for c in classes]
    return float(np.mean(recalls))


def dice(pred: np.ndarray, truth: np.ndarray, empty: float = float("nan")) -> float:
    """Dice 2|P∩T| / (|P|+|T|) of two boolean masks; ``empty`` when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    inter = int(np.count_nonzero(pred & truth))
    size = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if size == 0:
        return empty
    return 2.0 * inter / size


def dice_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(|P∩T|, |P|, |T|) of two boolean masks, for global Dice summed over cases."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    return int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)), int(np.count_nonzero(truth))


def dice_per_class(matrix: np.ndarray) -> np.ndarray:
    """Per-class Dice ``2·TP / (|truth| + |pred|)`` from a K×K confusion matrix (rows truth).

    A class absent from both truth and prediction gets NaN (nothing to score), not 1 or 0.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    denom = matrix.sum(axis=1) + matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
