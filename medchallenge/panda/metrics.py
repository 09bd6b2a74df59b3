"""PANDA's official metric: quadratic weighted kappa over ISUP grades 0–5, and the submission checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.metrics import confusion_matrix, quadratic_weighted_kappa

N_GRADES = 6


def qwk(truth: np.ndarray | list[int], pred: np.ndarray | list[int]) -> float:
    """Quadratic weighted kappa with labels 0–5 (PANDA's leaderboard metric)."""
    return quadratic_weighted_kappa(truth, pred, N_GRADES)


def _grades(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0) | (values > 5)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            path, f"row {row + 2}: {column} '{frame[column].iloc[row]}' for {frame['image_id'].iloc[row]} is not an integer 0–5"
        )
    return values.astype(int).to_numpy()


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read and check ``image_id,isup_grade`` (no duplicates, integer grades 0–5)."""
    path = Path(path)
    frame = read_csv(path, required=["image_id", "isup_grade"], dtype={"image_id": str})
    dup = frame["image_id"][frame["image_id"].duplicated()]
    if len(dup):
        raise DataError(path, f"duplicate image_id {dup.iloc[0]} ({len(dup)} duplicate row(s))")
    frame["isup_grade"] = _grades(frame, "isup_grade", path)
    return frame[["image_id", "isup_grade"]]


def evaluate_submission(predictions: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score a submission against a truth CSV (train.csv or any ``image_id,isup_grade[,data_provider]``).

    The truth may hold more ids than the submission; only submitted ids are scored. Ids in the
    submission but not in the truth are an error.

    Returns:
        ``{"qwk", "accuracy", "n", "qwk_by_provider", "accuracy_by_provider", "n_by_provider",
        "confusion_matrix"}`` (the matrix 6×6, rows truth, columns prediction).
    """
    predictions, truth = Path(predictions), Path(truth)
    sub = read_submission(predictions)
    ref = read_csv(truth, required=["image_id", "isup_grade"], dtype={"image_id": str})
    dup = ref["image_id"][ref["image_id"].duplicated()]
    if len(dup):
        raise DataError(truth, f"duplicate image_id {dup.iloc[0]}")
    ref["isup_grade"] = _grades(ref, "isup_grade", truth)
    unknown = sorted(set(sub["image_id"]) - set(ref["image_id"]))
    if unknown:
        raise DataError(
            predictions, f"{len(unknown)} image_id(s) not in the truth {truth.name}, e.g. {unknown[0]}"
        )
    merged = sub.merge(ref, on="image_id", suffixes=("_pred", "_true"), how="left")
    y_true = merged["isup_grade_true"].to_numpy()
    y_pred = merged["isup_grade_pred"].to_numpy()
    result: dict[str, Any] = {
        "qwk": qwk(y_true, y_pred),
        "accuracy": float(np.mean(y_true == y_pred)) if len(merged) else float("nan"),
        "n": int(len(merged)),
        "qwk_by_provider": {},
        "accuracy_by_provider": {},
        "n_by_provider": {},
        "confusion_matrix": confusion_matrix(y_true, y_pred, N_GRADES).tolist(),
    }
    if "data_provider" in merged.columns:
        for provider, group in merged.groupby("data_provider"):
            t, p = group["isup_grade_true"].to_numpy(), group["isup_grade_pred"].to_numpy()
            result["qwk_by_provider"][str(provider)] = qwk(t, p)
            result["accuracy_by_provider"][str(provider)] = float(np.mean(t == p))
            result["n_by_provider"][str(provider)] = int(len(group))
    return result
