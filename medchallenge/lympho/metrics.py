"""The challenge's metric: balanced accuracy (mean of the recalls of reactive and malignant)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.metrics import balanced_accuracy, confusion_matrix
from medchallenge.lympho.data import read_annotations


def evaluate_submission(predictions: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score ``Id,Predicted[,Score]`` against a CSV of the clinical_annotation format.

    Patients are scored on the submitted IDs that carry a label 0/1 in the truth; submitted IDs
    absent from the truth and duplicates are errors; labelled truth patients missing from the
    submission are named in a warning.
    """
    predictions, truth = Path(predictions), Path(truth)
    sub = read_csv(predictions, required=["Id", "Predicted"], dtype={"Id": str})
    dup = sub["Id"][sub["Id"].duplicated()]
    if len(dup):
        raise DataError(predictions, f"duplicate Id {dup.iloc[0]}")
    if not sub["Predicted"].isin([0, 1]).all():
        bad = sub[~sub["Predicted"].isin([0, 1])].iloc[0]
        raise DataError(predictions, f"Predicted '{bad['Predicted']}' for {bad['Id']} is not 0 or 1")
    ref = read_annotations(truth)
    unknown = sorted(set(sub["Id"]) - set(ref["ID"]))
    if unknown:
        raise DataError(predictions, f"{len(unknown)} Id(s) not in {truth.name}, e.g. {unknown[0]}")
    labelled = ref[ref["LABEL"] >= 0]
    missing = sorted(set(labelled["ID"]) - set(sub["Id"]))
    if missing:
        console.warn(f"{len(missing)} labelled patient(s) not in the submission, not scored: {', '.join(missing[:5])}")
    merged = sub.merge(labelled[["ID", "LABEL"]], left_on="Id", right_on="ID")
    if merged.empty:
        raise DataError(predictions, f"no submitted Id has a label 0/1 in {truth.name}")
    t, p = merged["LABEL"].to_numpy(), merged["Predicted"].to_numpy()
    cm = confusion_matrix(t, p, 2)
    result: dict[str, Any] = {
        "balanced_accuracy": balanced_accuracy(t, p),
        "accuracy": float(np.mean(t == p)),
        "recall_reactive": float(cm[0, 0] / cm[0].sum()) if cm[0].sum() else float("nan"),
        "recall_malignant": float(cm[1, 1] / cm[1].sum()) if cm[1].sum() else float("nan"),
        "n": int(len(merged)),
        "confusion_matrix": cm.tolist(),
    }
    if "Score" in merged.columns and len(set(t)) == 2:
        from sklearn.metrics import roc_auc_score

        result["roc_auc"] = float(roc_auc_score(t, merged["Score"].to_numpy()))
    return result
