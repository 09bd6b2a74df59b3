"""Lymphocytosis `evaluate` against the Kaggle metric (scikit-learn's balanced_accuracy_score).

The reference below is written here from the definition (mean over the classes present in the
truth of each class's recall), independently of medchallenge; scikit-learn is checked as well.
Bad submissions are one-line errors naming the file and the row, with nothing written.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.errors import DataError
from medchallenge.lympho.cache import open_cache
from medchallenge.lympho.data import read_annotations
from medchallenge.lympho.metrics import evaluate_submission


def reference_balanced_accuracy(truth: list[int], pred: list[int]) -> float:
    """Kaggle / sklearn rule: recall per class present in ``truth``, then their plain mean."""
    recalls = []
    for c in sorted(set(truth)):
        rows = [k for k, t in enumerate(truth) if t == c]
        recalls.append(sum(pred[k] == c for k in rows) / len(rows))
    return sum(recalls) / len(recalls)


def write_truth(path: Path, labels: dict[str, int]) -> Path:
    """A truth CSV in the clinical_annotation format (unnamed index column first)."""
    lines = [",ID,LABEL,GENDER,DOB,LYMPH_COUNT"]
    lines += [f"{k},{pid},{lab},M,1/2/1950,5.5" for k, (pid, lab) in enumerate(labels.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sub(path: Path, rows: list[tuple], header: str = "Id,Predicted") -> Path:
    path.write_text("\n".join([header] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def strict_loads(text: str) -> dict:
    """json.loads that refuses NaN / Infinity, as jq and JavaScript do."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_equals_sklearn(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    truth = {f"P{k}": int(v) for k, v in enumerate(rng.integers(0, 2, n))}
    pred = {pid: int(rng.integers(0, 2)) for pid in truth}
    order = list(rng.permutation(list(truth)))  # the submission's order is not the truth's
    write_truth(tmp_path / "truth.csv", truth)
    write_sub(tmp_path / "sub.csv", [(pid, pred[pid]) for pid in order])
    result = evaluate_submission(tmp_path / "sub.csv", tmp_path / "truth.csv")
    t, p = list(truth.values()), [pred[pid] for pid in truth]
    assert result["balanced_accuracy"] == pytest.approx(reference_balanced_accuracy(t, p), abs=1e-12)
    if len(set(t)) == 2:
        assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p), abs=1e-12)
    assert result["n"] == n and result["accuracy"] == pytest.approx(np.mean(np.array(t) == np.array(p)))


@pytest.mark.parametrize(("pred", "expected"), [([1, 0, 1, 1], 0.75), ([0, 0, 0, 0], 0.0), ([1, 1, 1, 1], 1.0)])
def test_single_class_truth_like_sklearn(tmp_path: Path, pred: list[int], expected: float) -> None:
    """Truth all malignant: sklearn returns the malignant recall (warning when the prediction has 0s)."""
    truth = {f"P{k}": 1 for k in range(4)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        official = balanced_accuracy_score(list(truth.values()), pred)
    assert official == pytest.approx(expected) == reference_balanced_accuracy(list(truth.values()), pred)
    if 0 in pred:  # sklearn's own behaviour, documented in docs/lympho.md
        assert any("y_pred contains classes not in y_true" in str(w.message) for w in caught)
    write_truth(tmp_path / "truth.csv", truth)
    write_sub(tmp_path / "sub.csv", [(pid, p, 0.1 * k) for k, (pid, p) in enumerate(zip(truth, pred))],
              header="Id,Predicted,Score")
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        result = evaluate_submission(tmp_path / "sub.csv", tmp_path / "truth.csv")
    assert not ours, [str(w.message) for w in ours]
    assert result["balanced_accuracy"] == pytest.approx(official)
    assert np.isnan(result["recall_reactive"]) and np.isnan(result["roc_auc"])  # undefined, not 0 or 1
    assert result["recall_malignant"] == pytest.approx(expected)


def test_cli_json_strict_and_quiet(tmp_path: Path) -> None:
    """--json and metrics.json (in --out): undefined values are null; nothing on stderr."""
    truth = write_truth(tmp_path / "truth.csv", {"P1": 1, "P2": 1, "P3": 1})
    sub = write_sub(tmp_path / "sub.csv", [("P1", 1, 0.9), ("P2", 0, 0.2), ("P3", 1, 0.7)],
                    header="Id,Predicted,Score")
    result = CliRunner().invoke(app, ["lympho", "evaluate", "--predictions", str(sub), "--truth", str(truth),
                                      "--json", "--out", str(tmp_path / "evaluation")])
    assert result.exit_code == 0, result.output
    printed = strict_loads(result.stdout)
    saved = strict_loads((tmp_path / "evaluation" / "metrics.json").read_text())
    for metrics in (printed, saved):
        assert metrics["recall_reactive"] is None and metrics["roc_auc"] is None
        assert metrics["balanced_accuracy"] == pytest.approx(2 / 3) and metrics["n"] == 3
        assert metrics["confusion_matrix"] == [[0, 0], [1, 2]]
    assert result.stderr == ""
    table = CliRunner().invoke(app, ["lympho", "evaluate", "--predictions", str(sub), "--truth", str(truth),
                                     "--out", str(tmp_path / "evaluation")])
    assert table.exit_code == 0 and "undefined" in table.stdout


def test_roc_auc_with_both_classes(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "truth.csv", {"P1": 1, "P2": 0, "P3": 1, "P4": 0})
    scores = [0.9, 0.4, 0.3, 0.2]
    sub = write_sub(tmp_path / "sub.csv", [(f"P{k + 1}", int(s >= 0.5), s) for k, s in enumerate(scores)],
                    header="Id,Predicted,Score")
    result = evaluate_submission(sub, truth)
    assert result["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], scores)) == pytest.approx(0.75)


TRUTH = {"P1": 1, "P2": 0, "P3": 1, "T9": -1}
BAD_SUBMISSIONS = [
    ("Id,Predicted\nP1,1\nP2,\nP3,1\n", "row 3 (P2): Predicted empty or NaN, expected 0 or 1"),
    ("Id,Predicted\nP1,1\nP2,abc\nP3,1\n", "row 3 (P2): Predicted 'abc', expected 0 or 1"),
    ("Id,Predicted\nP1,1\nP2,0\nP3,NaN\n", "row 4 (P3): Predicted empty or NaN, expected 0 or 1"),
    ("Id,Predicted\nP1,0.5\nP2,0\nP3,1\n", "row 2 (P1): Predicted '0.5', expected 0 or 1"),
    ("Id,Predicted\nP1,2\nP2,0\nP3,1\n", "row 2 (P1): Predicted '2', expected 0 or 1"),
    ("Id,Predicted,Score\nP1,1,0.9\nP2,0,\nP3,1,0.8\n", "row 3 (P2): Score empty or NaN, expected a finite number"),
    ("Id,Predicted,Score\nP1,1,0.9\nP2,0,high\nP3,1,0.8\n", "row 3 (P2): Score 'high', expected a finite number"),
    ("Id,Predicted,Score\nP1,1,inf\nP2,0,0.1\nP3,1,0.8\n", "row 2 (P1): Score 'inf', expected a finite number"),
    ("Id,Predicted\nP1,1\nP2,0\nP1,1\nP3,1\n", "row 4: duplicate Id P1 (first at row 2)"),
    ("Id,Predicted\nP1,1\nP2,0\nP3,1\nP8,1\n", "row 5: Id P8 is not in"),
    ("Id,Predicted\nP1,1\nP2,0\nP3,1\nT9,1\n", "row 5: Id T9 has no label 0/1"),
    ("Id,Predicted\nP1,1\nP3,1\n", "1 patient(s) of"),
    ("Id,Predicted\n", "3 patient(s) of"),
    ("Id,Predicted\nP1,1\n../P2,0\nP3,1\n", "row 3: Id '../P2'"),
    ("Id,Label\nP1,1\n", "missing column(s) Predicted"),
]


@pytest.mark.parametrize(("content", "message"), BAD_SUBMISSIONS)
def test_bad_submission_is_one_line_naming_file_and_row(tmp_path: Path, content: str, message: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out is ./evaluation
    truth = write_truth(tmp_path / "truth.csv", TRUTH)
    sub = tmp_path / "sub.csv"
    sub.write_text(content)
    result = CliRunner().invoke(app, ["lympho", "evaluate", "--predictions", str(sub), "--truth", str(truth),
                                      "--json"])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(sub) in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "evaluation").exists()  # nothing written for a refused submission


def test_missing_patient_names_truth_row(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "truth.csv", TRUTH)
    sub = write_sub(tmp_path / "sub.csv", [("P1", 1), ("P2", 0)])
    with pytest.raises(DataError, match=r"first P3 \(row 4 of truth.csv\)"):
        evaluate_submission(sub, truth)


def test_truth_label_outside_01(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "truth.csv", {"P1": 1, "P2": 2})
    sub = write_sub(tmp_path / "sub.csv", [("P1", 1), ("P2", 0)])
    with pytest.raises(DataError, match=r"truth.csv: row 3 \(P2\): LABEL '2' not in -1, 0, 1"):
        evaluate_submission(sub, truth)


@pytest.mark.parametrize("bad_id", ["../x", "/etc/x", "a/b", "..", "P1\\x"])
def test_clinical_ids_are_plain_names(tmp_path: Path, bad_id: str) -> None:
    """A patient ID would become trainset/<ID>: refused at read time, naming file and row."""
    data = tmp_path / "data"
    (data / "trainset").mkdir(parents=True)
    csv = write_truth(data / "clinical_annotation.csv", {"P1": 1, bad_id: 0})
    with pytest.raises(DataError, match="row 3: ID"):
        read_annotations(csv)
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(data), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "clinical_annotation.csv: row 3: ID" in result.output, result.output
    assert not (tmp_path / "cache").exists()


def test_cache_index_ids_are_plain_names(tmp_path: Path) -> None:
    """index.csv's IDs become images/<ID>.npy when training reads the cache."""
    (tmp_path / "meta.json").write_text('{"kind": "lympho-crops", "format": 1, "version": "0", "settings": {"crop": 16}}')
    (tmp_path / "index.csv").write_text("ID,LABEL,n_images\nP1,1,3\n../../x,0,3\n")
    with pytest.raises(DataError, match=r"index.csv: row 3: ID '../../x'"):
        open_cache(tmp_path)
