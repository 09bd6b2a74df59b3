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

    kappa = 1 - sum(W*O) / sum(W*E), W_ij = (i-j)^2, O the confusion matrix, E the outer product
    of its marginals scaled to O's total. Equals scikit-learn's
    ``cohen_kappa_score(weights="quadratic", labels=range(n))``, the call PANDA's organisers make,
    computed in the same order so that the floats agree, edge cases included:

    - NaN (undefined) when sum(W*E) is 0, i.e. truth and prediction are all one and the same
      class (sklearn's ``replace_undefined_by=np.nan``; before sklearn 1.6, 0/0 = NaN too);
    - 0.0 when each side is a single class but they differ (E equals O then);
    - NaN for no items at all (sklearn raises there; callers refuse empty inputs first).

    No warning is emitted for the undefined cases (stderr stays clean for batch jobs).
    """
    observed = confusion_matrix(truth, pred, n_classes).astype(np.float64)
    total = observed.sum()
    if total == 0:
        return float("nan")
    idx = np.arange(n_classes, dtype=np.float64)
    weights = (idx[None, :] - idx[:, None]) ** 2
    # sklearn's order: outer(column sums, row sums); W is symmetric, so the value is the same.
    expected = np.outer(observed.sum(axis=0), observed.sum(axis=1)) / total
    denom = (weights * expected).sum()
    if denom == 0:  # a sum of non-negative terms: exactly 0 only when one class is on both sides
        return float("nan")
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
    inter, size_p, size_t = dice_counts(pred, truth)
    return dice_from_counts(inter, size_p + size_t, empty)


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


def dice_from_counts(inter: float, size: float, empty: float = float("nan")) -> float:
    """Dice ``2·|P∩T| / (|P|+|T|)`` from counts (``size`` = |P|+|T|); ``empty`` when both are empty.

    ``empty`` is each challenge's rule for an empty region, passed in as data: NaN (KiTS starter
    code), 0 (medpy's ``dc``, used by the LiTS program), 1 (the BraTS region rule).
    """
    return empty if size == 0 else float(2 * inter / size)


def region_dice(matrix: np.ndarray, labels: Sequence[int], empty: float = float("nan")) -> float:
    """Dice of the region made of ``labels`` merged, from a K×K confusion matrix (rows truth).

    |P∩T| sums the cells whose truth and prediction both lie in the region; |T| its rows; |P| its columns.
    """
    matrix = np.asarray(matrix)
    idx = list(labels)
    inter = matrix[np.ix_(idx, idx)].sum()
    return dice_from_counts(inter, matrix[idx].sum() + matrix[:, idx].sum(), empty)
