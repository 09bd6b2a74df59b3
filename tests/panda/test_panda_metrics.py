"""QWK against hand-built cases, scikit-learn and the real example pair; submission checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medchallenge.core.errors import DataError
from medchallenge.panda.metrics import evaluate_submission, qwk


def test_qwk_hand_built() -> None:
    assert qwk([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]) == pytest.approx(1.0)
    # one grade off on one of two items: O = [[1,0],[1,0]] in grades {0,1}
    truth, pred = [0, 1], [0, 0]
    assert qwk(truth, pred) == pytest.approx(0.0)
    assert qwk([0, 5], [5, 0]) == pytest.approx(-1.0)


def test_qwk_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 6, 50)
        p = np.clip(t + rng.integers(-2, 3, 50), 0, 5)
        expected = cohen_kappa_score(t, p, weights="quadratic", labels=list(range(6)))
        assert qwk(t, p) == pytest.approx(expected)


def test_real_example_pair(realdata: Path) -> None:
    result = evaluate_submission(realdata / "panda/example_submission.csv", realdata / "panda/example_reference.csv")
    assert result["qwk"] == pytest.approx(0.77886, abs=5e-6)
    assert result["accuracy"] == pytest.approx(0.35437, abs=5e-6)
    assert result["n"] == 206


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_submission_errors(tmp_path: Path) -> None:
    truth = _write(tmp_path / "truth.csv", ["image_id,data_provider,isup_grade,gleason_score",
                                           "a,radboud,0,negative", "b,karolinska,3,4+3", "c,radboud,5,5+5"])
    sub = _write(tmp_path / "sub.csv", ["image_id,isup_grade", "a,0", "b,3"])
    result = evaluate_submission(sub, truth)
    assert result["n"] == 2 and result["accuracy"] == 1.0
    assert set(result["qwk_by_provider"]) == {"radboud", "karolinska"}
    with pytest.raises(DataError, match="duplicate image_id a"):
        evaluate_submission(_write(tmp_path / "dup.csv", ["image_id,isup_grade", "a,0", "a,1"]), truth)
    with pytest.raises(DataError, match="not in the truth"):
        evaluate_submission(_write(tmp_path / "unk.csv", ["image_id,isup_grade", "zzz,0"]), truth)
    with pytest.raises(DataError, match="not an integer 0–5"):
        evaluate_submission(_write(tmp_path / "bad.csv", ["image_id,isup_grade", "a,7"]), truth)
    with pytest.raises(DataError, match="missing column"):
        evaluate_submission(_write(tmp_path / "col.csv", ["image_id,grade", "a,0"]), truth)
