"""Decisions tuned on validation: the threshold that maximises the official metric, stored and reused.

A fixed 0.5 on a probability throws the ranking away when classes are unbalanced (issue 14: the
real lymphocytosis data called every patient malignant at epoch 6 while the AUC rose). Training
picks the threshold on its validation split for the challenge's metric, the checkpoint stores it,
and ``predict --threshold auto`` (the default) uses it; a number overrides it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.errors import DataError, OptionError


def candidate_thresholds(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below and one above all of them."""
    values = np.unique(np.asarray(scores, dtype=np.float64)[np.isfinite(np.asarray(scores, dtype=np.float64))])
    if values.size == 0:
        return np.array([0.5])
    mids = (values[:-1] + values[1:]) / 2
    return np.concatenate([[values[0] - 1e-6], mids, [values[-1] + 1e-6]])


def best_threshold(scores: Sequence[float] | np.ndarray, truth: Sequence[int] | np.ndarray,
                   metric: Callable[[np.ndarray, np.ndarray], float], default: float = 0.5) -> tuple[float, float]:
    """(threshold, metric) maximising ``metric(truth, scores >= t)`` over the candidate thresholds.

    Ties go to the candidate closest to ``default`` (a plateau of equal scores does not drift to an
    extreme). With no finite score, ``default`` and its metric.
    """
    scores_arr = np.asarray(scores, dtype=np.float64)
    truth_arr = np.asarray(truth)
    best_t, best_m = default, -np.inf
    for t in candidate_thresholds(scores_arr):
        value = float(metric(truth_arr, (scores_arr >= t).astype(np.int64)))
        if not np.isfinite(value):
            continue
        if value > best_m + 1e-12 or (abs(value - best_m) <= 1e-12 and abs(t - default) < abs(best_t - default)):
            best_t, best_m = float(t), value
    if not np.isfinite(best_m):
        best_m = float(metric(truth_arr, (scores_arr >= default).astype(np.int64)))
    return best_t, best_m


def resolve_threshold(value: str | float | None, meta: dict[str, Any], checkpoint: str | Path,
                      key: str = "threshold", default: float | None = None) -> Any:
    """The threshold ``predict`` uses: ``auto`` → the checkpoint's stored one, a number → that number.

    Raises:
        OptionError: not ``auto`` and not a number (or comma-separated numbers).
        DataError: ``auto`` with a checkpoint that stores none and no ``default``.
    """
    if value is None or str(value).strip().lower() == "auto":
        stored = meta.get(key)
        if stored is None:
            if default is None:
                raise DataError(checkpoint, f"stores no tuned {key} (trained by an older version): pass --threshold")
            return default
        return stored
    try:
        numbers = [float(v) for v in str(value).split(",")]
    except ValueError:
        raise OptionError(f"--threshold {value}: expected auto or a number (or comma-separated numbers)") from None
    if not all(np.isfinite(numbers)):
        raise OptionError(f"--threshold {value}: expected finite numbers")
    return numbers[0] if len(numbers) == 1 else numbers
