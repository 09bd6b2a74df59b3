"""PANDA scoring as the organisers score: QWK (edge cases included) against an independent formula
and scikit-learn, the real example pair, and the submission checks (missing, extra, empty, bad rows).

The organisers' code (DIAGNijmegen/panda-challenge, src/evaluation/metrics.py) calls
``sklearn.metrics.cohen_kappa_score(y1=reference, y2=submission, labels=[0,1,2,3,4,5],
weights='quadratic')`` and src/evaluation/util.py refuses a submission that "does not contain a
prediction for all cases in the reference".
"""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from medchallenge.cli import app
from medchallenge.core.errors import DataError
from medchallenge.core.metrics import quadratic_weighted_kappa
from medchallenge.panda.metrics import evaluate_submission, qwk

LABELS = [0, 1, 2, 3, 4, 5]


def official_qwk(truth: list[int], pred: list[int], k: int = 6) -> float:
    """Cohen's (1968) weighted kappa with quadratic weights, in exact fractions.

    kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij, w_ij = (i - j)^2, O_ij the count of items
    graded i by the reference and j by the submission, E_ij = (row total i)(column total j) / n.
    Undefined (NaN) when sum w·E = 0, which is what the organisers' scikit-learn call returns.
    """
    n = len(truth)
    counts = [[0] * k for _ in range(k)]
    for t, p in zip(truth, pred):
        counts[int(t)][int(p)] += 1
    rows = [sum(counts[i]) for i in range(k)]
    cols = [sum(counts[i][j] for i in range(k)) for j in range(k)]
    observed = sum((i - j) ** 2 * counts[i][j] for i in range(k) for j in range(k))
    expected = sum(Fraction((i - j) ** 2 * rows[i] * cols[j], n) for i in range(k) for j in range(k))
    if expected == 0:
        return float("nan")
    return float(1 - Fraction(observed) / expected)


def sklearn_qwk(truth: list[int], pred: list[int], labels: list[int] | None = LABELS) -> float:
    with warnings.catch_warnings():  # sklearn warns about the undefined case; we compare values only
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(truth, pred, labels=labels, weights="quadratic"))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# (truth, prediction, official value): the degenerate cases first
EDGE_CASES = [
    ([3, 3, 3], [3, 3, 3], float("nan")),  # one grade on both sides: undefined
    ([3], [3], float("nan")),
    ([0, 0], [0, 0], float("nan")),
    ([3, 3, 3], [4, 4, 4], 0.0),  # one grade each, but different: E = O, kappa 0
    ([3, 3], [3, 4], 0.0),
    ([3, 4], [3, 3], 0.0),
    ([0, 5], [0, 5], 1.0),
    ([0, 5], [5, 0], -1.0),
    ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], 1.0),
]


@pytest.mark.parametrize(("truth", "pred", "value"), EDGE_CASES)
def test_qwk_edge_cases_as_the_organisers(truth: list[int], pred: list[int], value: float) -> None:
    assert same(official_qwk(truth, pred), value)
    # scikit-learn, as the organisers call it (labels 0–5), and without labels: the same here
    assert same(sklearn_qwk(truth, pred), value)
    assert same(sklearn_qwk(truth, pred, labels=None), value)
    assert same(qwk(truth, pred), value)
    assert same(quadratic_weighted_kappa(truth, pred, 6), value)


def test_qwk_random_cases_match_formula_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    for i in range(60):
        n = int(rng.integers(1, 40))
        spread = int(rng.integers(1, 7))  # few grades sometimes, so degenerate draws happen too
        t = rng.integers(0, spread, n).tolist()
        p = np.clip(np.array(t) + rng.integers(-2, 3, n), 0, 5).tolist() if i % 2 else rng.integers(0, spread, n).tolist()
        assert same(qwk(t, p), official_qwk(t, p)), (t, p)
        assert same(qwk(t, p), sklearn_qwk(t, p)), (t, p)


def test_qwk_undefined_emits_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(qwk([2, 2], [2, 2]))


def test_real_example_pair(realdata: Path) -> None:
    sub_file, ref_file = realdata / "panda/example_submission.csv", realdata / "panda/example_reference.csv"
    result = evaluate_submission(sub_file, ref_file)
    assert result["qwk"] == pytest.approx(0.77886, abs=5e-6)
    assert result["accuracy"] == pytest.approx(0.35437, abs=5e-6)
    assert result["n"] == result["n_reference"] == 206 and result["subset"] is False
    # the organisers' alignment (sorted by image_id) and call
    ref = pd.read_csv(ref_file).sort_values("image_id")
    sub = pd.read_csv(sub_file).sort_values("image_id")
    assert list(ref["image_id"]) == list(sub["image_id"])
    expected = sklearn_qwk(ref["isup_grade"].tolist(), sub["isup_grade"].tolist())
    assert result["qwk"] == pytest.approx(expected, abs=1e-12)
    assert result["qwk"] == pytest.approx(official_qwk(ref["isup_grade"].tolist(), sub["isup_grade"].tolist()))


A, B, C = "0" * 32, "1" * 32, "2" * 32


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def truth(tmp_path: Path) -> Path:
    return _write(tmp_path / "truth.csv", ["image_id,data_provider,isup_grade,gleason_score",
                                          f"{A},radboud,0,negative", f"{B},karolinska,3,4+3", f"{C},radboud,5,5+5"])


def test_missing_ids_are_an_error_unless_subset(tmp_path: Path, truth: Path) -> None:
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", f"{A},0", f"{B},3"])
    with pytest.raises(DataError, match=rf"does not contain a prediction for all cases .*1 of 3 missing, e\.g\. {C}"):
        evaluate_submission(sub, truth)
    result = evaluate_submission(sub, truth, subset=True)
    assert result["subset"] is True and result["n"] == 2 and result["n_reference"] == 3
    assert result["accuracy"] == 1.0 and result["qwk"] == pytest.approx(official_qwk([0, 3], [0, 3]))
    full = _write(tmp_path / "full.csv", ["image_id,isup_grade", f"{C},4", f"{A},0", f"{B},3"])
    result = evaluate_submission(full, truth, subset=True)  # nothing missing: not a subset
    assert result["subset"] is False and result["n"] == 3
    assert result["qwk"] == pytest.approx(official_qwk([0, 3, 5], [0, 3, 4]))


def test_per_provider_single_grade_is_undefined(tmp_path: Path, truth: Path) -> None:
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", f"{A},1", f"{B},3", f"{C},5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_submission(sub, truth)
    # karolinska: one slide, grade 3 on both sides -> undefined, not 1.0
    assert math.isnan(result["qwk_by_provider"]["karolinska"])
    assert result["accuracy_by_provider"]["karolinska"] == 1.0
    assert result["qwk_by_provider"]["radboud"] == pytest.approx(official_qwk([0, 5], [1, 5]))
    assert result["qwk"] == pytest.approx(official_qwk([0, 3, 5], [1, 3, 5]))


@pytest.mark.parametrize(("rows", "message"), [
    (["image_id,isup_grade"], "empty submission"),
    (["image_id,isup_grade", f"{A},0", f"{B},1", f"{A},1"], f"row 4: duplicate image_id {A} \\(first at row 2"),
    (["image_id,isup_grade", f"{A},0", f"{'f' * 32},0"], f"row 3: image_id {'f' * 32} is not in the reference"),
    (["image_id,isup_grade", f"{A},0", "../../evil/x,0"], "row 3: image_id '../../evil/x' contains a path"),
    (["image_id,isup_grade", f"{A},0", f"{B.upper()[:31]}B,0"], "row 3: image_id .* does not match"),
    (["image_id,isup_grade", f"{A},0", f"{B},2.5"], f"row 3: isup_grade '2.5' for {B} is not an integer 0–5"),
    (["image_id,isup_grade", f"{A},0", f"{B},three"], "row 3: isup_grade 'three'"),
    (["image_id,isup_grade", f"{A},6", f"{B},1"], "row 2: isup_grade '6'"),
    (["image_id,isup_grade", f"{A},-1", f"{B},1"], "row 2: isup_grade '-1'"),
    (["image_id,isup_grade", f"{A},0", f"{B},"], "row 3: isup_grade 'nan'"),
    (["image_id,grade", f"{A},0"], "missing column"),
])
def test_bad_submissions_name_file_and_row(tmp_path: Path, truth: Path, rows: list[str], message: str) -> None:
    sub = _write(tmp_path / "sub.csv", rows)
    with pytest.raises(DataError, match=message) as err:
        evaluate_submission(sub, truth, subset=True)
    assert str(err.value).startswith(str(sub))


def test_bad_or_empty_reference(tmp_path: Path) -> None:
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", f"{A},0"])
    empty = _write(tmp_path / "empty.csv", ["image_id,isup_grade"])
    with pytest.raises(DataError, match="empty reference"):
        evaluate_submission(sub, empty)
    evil = _write(tmp_path / "evil.csv", ["image_id,isup_grade", f"{A},0", "../x,1"])
    with pytest.raises(DataError, match=r"evil\.csv: row 3: image_id"):
        evaluate_submission(sub, evil, subset=True)


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_cli_undefined_kappa_is_null_and_quiet(tmp_path: Path, truth: Path, runner) -> None:  # noqa: ANN001
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", f"{A},1", f"{B},3", f"{C},5"])
    args = ["panda", "evaluate", "--predictions", str(sub), "--truth", str(truth), "--out", str(tmp_path / "ev")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    printed = _strict(result.stdout)
    assert printed["qwk_by_provider"]["karolinska"] is None
    assert printed["qwk"] == pytest.approx(official_qwk([0, 3, 5], [1, 3, 5]))
    assert printed["subset"] is False and printed["n"] == printed["n_reference"] == 3
    assert _strict((tmp_path / "ev" / "metrics.json").read_text()) == printed
    assert "Warning" not in result.stderr and "nan" not in result.stderr.lower()
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "undefined" in table.stdout and "nan" not in table.stdout.lower()
    assert "Warning" not in table.stderr


def test_cli_all_one_grade_and_subset(tmp_path: Path, truth: Path, runner) -> None:  # noqa: ANN001
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", f"{B},3"])
    args = ["panda", "evaluate", "--predictions", str(sub), "--truth", str(truth), "--out", str(tmp_path / "ev")]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2 and "does not contain a prediction for all cases" in bad.output
    assert str(sub) in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "ev").exists()
    result = runner.invoke(app, [*args, "--subset", "--json"])
    assert result.exit_code == 0, result.output
    printed = _strict(result.stdout)
    assert printed["qwk"] is None and printed["subset"] is True
    assert (printed["n"], printed["n_reference"]) == (1, 3)
    table = runner.invoke(app, [*args, "--subset"])
    assert "1 of 3 truth ids scored" in table.stdout and "undefined" in table.stdout
    empty = _write(tmp_path / "empty.csv", ["image_id,isup_grade"])
    bad = runner.invoke(app, ["panda", "evaluate", "--predictions", str(empty), "--truth", str(truth),
                              "--out", str(tmp_path / "ev2")])
    assert bad.exit_code == 2 and "empty submission" in bad.output
