"""Ordinal cut-offs: the continuous ISUP score → a grade, with the 5 cut-offs tuned on validation for QWK.

The ordinal classifier's score is the sum of its 5 sigmoids, in [0, 5]. The fixed cut-offs
0.5, 1.5, 2.5, 3.5, 4.5 round it; PANDA's top teams instead chose the cut-offs that maximise QWK
on out-of-fold scores (an "optimized rounder"). Training tunes them on its validation split, stores
them in the checkpoint (``meta["threshold"]``) and ``predict --threshold auto`` uses them.

``grade = #{k : score >= cutoff_k}``, so any ascending vector gives grades 0–5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medchallenge.core.errors import OptionError
from medchallenge.core.thresholds import candidate_thresholds

MAX_CANDIDATES = 1024
"""Candidate positions per cut-off (midpoints between validation scores, thinned evenly beyond this)."""
FIXED = (0.5, 1.5, 2.5, 3.5, 4.5)
"""The fixed cut-offs: the rounded score (the public baseline's decision)."""


def apply_cutoffs(scores: Sequence[float] | np.ndarray, cutoffs: Sequence[float] = FIXED) -> np.ndarray:
    """Scores (B,) → grades (B,) int64: how many cut-offs each score reaches."""
    scores = np.asarray(scores, dtype=np.float64)
    return (scores[:, None] >= np.asarray(cutoffs, dtype=np.float64)[None, :]).sum(axis=1).astype(np.int64)


def tune_cutoffs(scores: Sequence[float] | np.ndarray, truth: Sequence[int] | np.ndarray,
                 passes: int = 3) -> tuple[list[float], float]:
    """(cut-offs, QWK) maximising QWK of the graded ``scores`` against ``truth``.

    Coordinate search: each cut-off in turn takes the best of the candidate thresholds
    (``core.thresholds.candidate_thresholds``: midpoints between scores) that keeps the vector
    ascending, the others fixed; ties go to the candidate nearest the fixed cut-off, so a plateau
    (e.g. no validation slide between two grades) leaves it where rounding puts it.
    """
    from medchallenge.panda.metrics import qwk

    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    cutoffs = list(FIXED)
    best = _score(qwk, truth, apply_cutoffs(scores, cutoffs))
    candidates = candidate_thresholds(scores)
    if len(candidates) > MAX_CANDIDATES:  # thousands of validation slides: every k-th midpoint is enough
        candidates = candidates[np.linspace(0, len(candidates) - 1, MAX_CANDIDATES).round().astype(int)]
    for _ in range(passes):
        changed = False
        for k in range(len(cutoffs)):
            low = cutoffs[k - 1] if k else -np.inf
            high = cutoffs[k + 1] if k + 1 < len(cutoffs) else np.inf
            for t in candidates[(candidates > low) & (candidates < high)]:
                trial = [*cutoffs[:k], float(t), *cutoffs[k + 1:]]
                value = _score(qwk, truth, apply_cutoffs(scores, trial))
                closer = abs(t - FIXED[k]) < abs(cutoffs[k] - FIXED[k])
                if value > best + 1e-12 or (abs(value - best) <= 1e-12 and closer):
                    cutoffs, best, changed = trial, value, True
        if not changed:
            break
    return [round(c, 6) for c in cutoffs], best


def _score(qwk: object, truth: np.ndarray, pred: np.ndarray) -> float:
    value = float(qwk(truth, pred))  # type: ignore[operator]
    return value if np.isfinite(value) else -np.inf  # undefined kappa: never preferred


def parse_cutoffs(value: object, source: str) -> list[float]:
    """Five ascending cut-offs from ``--threshold`` (resolved) or a checkpoint's meta.

    Raises:
        OptionError: not 5 finite ascending numbers.
    """
    numbers = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(numbers) != len(FIXED) or not np.all(np.isfinite(numbers)) or np.any(np.diff(numbers) < 0):
        raise OptionError(f"{source}: expected 5 ascending ordinal cut-offs such as"
                          f" {','.join(str(c) for c in FIXED)} (got {value})")
    return numbers
