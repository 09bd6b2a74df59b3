"""LiTS liver and tumour Dice, per case and global, exactly as the official scoring program.

Reference: PatrickChrist/lits-challenge-scoring ``program/evaluate.py`` (with
``program/helpers/calc_metric.py``, whose ``dice`` is medpy's ``dc``: 0 when both masks are empty).
Per volume, with ``P`` the prediction and ``T`` the truth label maps:

- liver masks are ``P >= 1`` and ``T >= 1``; tumour masks ``P == 2`` and ``T == 2``;
- ``liver_prediction_exists = any(P == 1)``: without a voxel labelled 1 the case's liver Dice is
  0, even when label 2 overlaps the liver or when neither has any liver;
- tumour Dice per case is 1 when both tumour masks are empty, else the Dice (0 if one is empty);
- "Dice global" pools intersections ``I`` and sizes ``S`` over cases, ``2·I / S``; for a case
  without liver prediction only the truth's liver voxels are added to ``S`` (nothing to ``I``).
  With ``S = 0`` over all cases (no tumour anywhere) the official division fails: undefined, NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.metrics import dice_counts, dice_from_counts


@dataclass
class LitsCaseScore:
    """One volume's per-case Dice and its contribution to the global Dice (``I`` and ``S``)."""

    liver_dice: float
    tumor_dice: float
    liver_is: tuple[int, int]
    tumor_is: tuple[int, int]


def _dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int, int]:
    """(Dice with 0 for two empty masks — medpy's ``dc`` —, |P∩T|, |P|+|T|)."""
    inter, size_p, size_t = dice_counts(pred, truth)
    return dice_from_counts(inter, size_p + size_t, empty=0.0), inter, size_p + size_t


def lits_case_score(pred: np.ndarray, truth: np.ndarray) -> LitsCaseScore:
    """The official per-volume scores of two label maps of the same shape (labels 0, 1, 2)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    pred_tumor, true_tumor = pred == 2, truth == 2
    tumor_dice, t_inter, t_size = _dice(pred_tumor, true_tumor)
    if not pred_tumor.any() and not true_tumor.any():
        tumor_dice = 1.0  # the official per-case rule for a volume without tumour on either side
    true_liver = truth >= 1
    if np.any(pred == 1):
        liver_dice, l_inter, l_size = _dice(pred >= 1, true_liver)
    else:
        liver_dice, l_inter, l_size = 0.0, 0, int(np.count_nonzero(true_liver))
    return LitsCaseScore(liver_dice, tumor_dice, (l_inter, l_size), (t_inter, t_size))


@dataclass
class LitsScores:
    """Per-case mean and global Dice of liver and tumour over a set of volumes."""

    cases: list[LitsCaseScore] = field(default_factory=list)

    def add(self, score: LitsCaseScore) -> None:
        self.cases.append(score)

    def summary(self) -> dict[str, float]:
        """``liver_dice_per_case``, ``liver_dice_global``, ``tumor_dice_per_case``, ``tumor_dice_global``
        (NaN where undefined: no case, or a global Dice with nothing on either side)."""
        out = {}
        for organ in ("liver", "tumor"):
            per_case = [getattr(c, f"{organ}_dice") for c in self.cases]
            inter = sum(getattr(c, f"{organ}_is")[0] for c in self.cases)
            size = sum(getattr(c, f"{organ}_is")[1] for c in self.cases)
            out[f"{organ}_dice_per_case"] = sum(per_case) / len(per_case) if per_case else float("nan")
            out[f"{organ}_dice_global"] = 2.0 * inter / size if size else float("nan")
        return out


# the out-of-fold columns of one validation volume (RUN/oof.csv): its per-case Dice and the
# counts the official program adds to the global Dice (I = |P∩T|, S = |P| + |T| as it accumulates them)
OOF_COLUMNS = ("liver_dice", "tumor_dice", "liver_intersection", "liver_size_sum", "tumor_intersection",
               "tumor_size_sum")


def oof_values(score: LitsCaseScore) -> dict[str, Any]:
    """The :data:`OOF_COLUMNS` of a volume's official score (its out-of-fold row without ``id``)."""
    return {"liver_dice": score.liver_dice, "tumor_dice": score.tumor_dice,
            "liver_intersection": score.liver_is[0], "liver_size_sum": score.liver_is[1],
            "tumor_intersection": score.tumor_is[0], "tumor_size_sum": score.tumor_is[1]}


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The official four numbers on pooled out-of-fold rows; the first (tumour Dice per case) ranks LiTS.

    Per-case Dice are averaged over the rows; global Dice pools the rows' intersections and size
    sums, exactly as the scoring program pools them over volumes (NaN when nothing to pool).
    """
    missing = [c for c in OOF_COLUMNS if c not in oof.columns]
    if missing:
        raise DataError(None, f"out-of-fold rows lack {', '.join(missing)} (not a LiTS oof.csv)")
    blank = oof[list(OOF_COLUMNS)].isna().any(axis=1)
    if blank.any():  # a fold's oof.csv of another format, pooled with others: its columns are empty
        cases = ", ".join(map(str, oof.loc[blank, "id"].head(3)))
        raise DataError(None, f"out-of-fold rows of {cases} lack values of {', '.join(OOF_COLUMNS)}"
                              " (not a LiTS oof.csv)")
    scores = LitsScores([LitsCaseScore(float(r.liver_dice), float(r.tumor_dice),
                                       (int(r.liver_intersection), int(r.liver_size_sum)),
                                       (int(r.tumor_intersection), int(r.tumor_size_sum)))
                         for r in oof.itertuples()])
    summary = scores.summary()
    first = "tumor_dice_per_case"
    return {first: summary[first], **{k: v for k, v in summary.items() if k != first}}
