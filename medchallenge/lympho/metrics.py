"""The challenge's metric: balanced accuracy (mean of the recalls of reactive and malignant).

The Kaggle challenge scores ``Id,Predicted`` with scikit-learn's ``balanced_accuracy_score``: the
mean, over the classes present in the truth, of each class's recall. Kaggle accepts a submission
only with exactly one row per solution Id, so a missing, extra or duplicate Id is an error here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.metrics import balanced_accuracy, confusion_matrix
from medchallenge.core.names import check_names
from medchallenge.lympho.data import read_annotations


def _refuse_first(bad: np.ndarray, frame: pd.DataFrame, path: Path, column: str, expected: str) -> None:
    """DataError naming the first row where ``bad`` (N,) holds; rows count the header as row 1."""
    if bad.any():
        row = int(bad.argmax())
        raw = frame[column].iloc[row]
        shown = "empty or NaN" if pd.isna(raw) else repr(str(raw))
        raise DataError(path, f"row {row + 2} ({frame['Id'].iloc[row]}): {column} {shown}, expected {expected}")


def read_submission(path: str | Path) -> pd.DataFrame:
    """``Id,Predicted[,Score]`` checked: Id (str) plain and unique, Predicted int 0/1, Score finite float.

    Raises:
        DataError: a missing column, an Id that is not a plain name, a duplicate Id, a Predicted that
            is not 0 or 1 (NaN, empty, text, 0.5, 2), a Score that is not a finite number; naming the row.
    """
    path = Path(path)
    sub = read_csv(path, required=["Id", "Predicted"], dtype={"Id": str})
    check_names(sub["Id"], path, what="Id")
    dup = sub["Id"].duplicated().to_numpy()
    if dup.any():
        row = int(dup.argmax())
        first = int((sub["Id"] == sub["Id"].iloc[row]).to_numpy().argmax())
        raise DataError(path, f"row {row + 2}: duplicate Id {sub['Id'].iloc[row]} (first at row {first + 2})")
    # to_numeric turns text and empty cells into NaN, which isin / isfinite then refuse
    predicted = pd.to_numeric(sub["Predicted"], errors="coerce")
    _refuse_first(~predicted.isin([0, 1]).to_numpy(), sub, path, "Predicted", "0 or 1")
    result = pd.DataFrame({"Id": sub["Id"], "Predicted": predicted.astype(int)})
    if "Score" in sub.columns:
        score = pd.to_numeric(sub["Score"], errors="coerce").to_numpy(dtype=float)
        _refuse_first(~np.isfinite(score), sub, path, "Score", "a finite number")
        result["Score"] = score
    return result


def _match_truth(sub: pd.DataFrame, ref: pd.DataFrame, predictions: Path, truth: Path) -> np.ndarray:
    """Truth labels (N,) of the submitted Ids, in the submission's order; every labelled patient once."""
    labels = dict(zip(ref["ID"], ref["LABEL"]))
    known = sub["Id"].map(labels)
    if known.isna().any():
        row = int(known.isna().to_numpy().argmax())
        raise DataError(predictions, f"row {row + 2}: Id {sub['Id'].iloc[row]} is not in {truth}")
    if (known < 0).any():
        row = int((known < 0).to_numpy().argmax())
        raise DataError(predictions, f"row {row + 2}: Id {sub['Id'].iloc[row]} has no label 0/1 in {truth}"
                                     " (LABEL -1, a test patient)")
    labelled = ref[ref["LABEL"] >= 0]
    if labelled.empty:
        raise DataError(truth, "no patient with a LABEL 0 or 1 to score against")
    missing = labelled[~labelled["ID"].isin(sub["Id"])]
    if len(missing):  # Kaggle refuses a submission without a row for every solution Id
        first = missing.iloc[0]
        raise DataError(predictions, f"{len(missing)} patient(s) of {truth} have no prediction, first {first['ID']}"
                                     f" (row {int(missing.index[0]) + 2} of {truth.name}):"
                                     f" {', '.join(missing['ID'].head(5))}")
    return known.to_numpy(dtype=int)


def _scored(predictions: str | Path, truth: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The checked submission and the truth label of each of its rows."""
    predictions, truth = Path(predictions), Path(truth)
    sub = read_submission(predictions)
    return sub, _match_truth(sub, read_annotations(truth), predictions, truth)


def evaluate_submission(predictions: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score ``Id,Predicted[,Score]`` against a CSV of the clinical_annotation format.

    The scored patients are the truth's rows with LABEL 0/1; the submission must hold each of them
    exactly once and nothing else (LABEL −1 rows of the truth are not scorable). Balanced accuracy
    is scikit-learn's: with a single class in the truth it is that class's recall; the recall of an
    absent class and the ROC AUC of a single-class truth are undefined (NaN, ``null`` in JSON).
    """
    sub, t = _scored(predictions, truth)
    p = sub["Predicted"].to_numpy(dtype=int)
    cm = confusion_matrix(t, p, 2)
    result: dict[str, Any] = {
        "balanced_accuracy": balanced_accuracy(t, p),
        "accuracy": float(np.mean(t == p)),
        "recall_reactive": float(cm[0, 0] / cm[0].sum()) if cm[0].sum() else float("nan"),
        "recall_malignant": float(cm[1, 1] / cm[1].sum()) if cm[1].sum() else float("nan"),
        "n": int(len(t)),
        "confusion_matrix": cm.tolist(),
    }
    if "Score" in sub.columns:
        from sklearn.metrics import roc_auc_score

        # sklearn raises on a single-class truth: the AUC is undefined there, not 0.5
        result["roc_auc"] = float(roc_auc_score(t, sub["Score"].to_numpy())) if len(set(t)) == 2 else float("nan")
    return result


def patient_table(predictions: str | Path, truth: str | Path) -> pd.DataFrame:
    """One row per scored patient: Id, truth, predicted, correct (and score when submitted)."""
    sub, t = _scored(predictions, truth)
    cases = pd.DataFrame({"Id": sub["Id"], "truth": t, "predicted": sub["Predicted"].to_numpy(dtype=int)})
    cases["correct"] = (cases["truth"] == cases["predicted"]).astype(int)
    if "Score" in sub.columns:
        cases["score"] = sub["Score"].to_numpy()
    return cases


def evaluation_report(predictions: str | Path, truth: str | Path, plots: bool = False) -> Any:
    """The shared :class:`~medchallenge.core.report.EvaluationReport`: balanced accuracy, per-patient
    cases, and (``plots``) the confusion matrix as a PNG."""
    from medchallenge.core.report import EvaluationReport

    result = evaluate_submission(predictions, truth)
    summary = {k: v for k, v in result.items() if k != "n"}
    draw = None
    if plots:
        from medchallenge.core.plots import plot_confusion_matrix

        def draw(folder: Path) -> None:
            plot_confusion_matrix(np.asarray(result["confusion_matrix"]), ["reactive", "malignant"],
                                  folder / "confusion_matrix.png", title="lymphocytosis (per patient)")

    return EvaluationReport("lympho", "balanced accuracy", result["balanced_accuracy"], result["n"], summary,
                            cases=patient_table(predictions, truth), plots=draw)


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """Balanced accuracy (scikit-learn's) of pooled out-of-fold rows, each at its own fold's threshold.

    ``oof`` has one row per validation patient: ``label``, ``probability``, ``threshold`` (the one
    tuned on that fold's validation and stored in its best.pt). Also the score at a fixed 0.5 and the
    ROC AUC of the pooled probabilities (undefined with one class).
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    truth = oof["label"].to_numpy(dtype=int)
    prob = oof["probability"].to_numpy(dtype=float)
    tuned = (prob >= oof["threshold"].to_numpy(dtype=float)).astype(int)
    two = len(set(truth)) == 2
    return {"balanced_accuracy": float(balanced_accuracy_score(truth, tuned)),
            "balanced_accuracy_at_0.5": float(balanced_accuracy_score(truth, (prob >= 0.5).astype(int))),
            "roc_auc": float(roc_auc_score(truth, prob)) if two else float("nan")}
