"""Lymphocytosis: the real CSV, the metric, pooling properties, end to end for mean and moe, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.errors import DataError
from medchallenge.core.metrics import balanced_accuracy
from medchallenge.lympho.data import parse_dob, read_annotations
from medchallenge.lympho.models import GatedAttention, segment_mean


def test_real_csv(realdata: Path) -> None:
    frame = read_annotations(realdata / "lympho/clinical_annotation.csv")
    assert len(frame) == 205
    assert frame["LABEL"].value_counts().to_dict() == {1: 113, 0: 50, -1: 42}
    assert set(frame["GENDER"]) == {"M", "F"}  # the lowercase 'f' normalised
    p26 = frame.set_index("ID").loc["P26"]
    assert p26["BIRTH_YEAR"] == 1933 and p26["BIRTH_MONTH"] == 11  # 11/3/1933 is M/D/YYYY
    assert frame["AGE"].between(15, 110).all()


def test_dob_formats() -> None:
    assert parse_dob("11/3/1933").isoformat() == "1933-11-03"
    assert parse_dob("28-04-1943").isoformat() == "1943-04-28"
    with pytest.raises(ValueError):
        parse_dob("1943.04.28")


def test_balanced_accuracy() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    assert balanced_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p))
    assert balanced_accuracy(t, np.ones_like(t)) == pytest.approx(0.5)


def test_mean_pooling_invariance_and_attention_weights() -> None:
    torch.manual_seed(0)
    feats = torch.rand(7, 4)
    bags = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    pooled = segment_mean(feats, bags, 2)
    perm = torch.randperm(7)
    torch.testing.assert_close(segment_mean(feats[perm], bags[perm], 2), pooled)
    doubled = segment_mean(torch.cat([feats, feats]), torch.cat([bags, bags]), 2)  # bag size doubled
    torch.testing.assert_close(doubled, pooled)
    _, weights = GatedAttention(4, 8)(feats, bags, 2)
    sums = torch.zeros(2).index_add_(0, bags, weights)
    torch.testing.assert_close(sums, torch.ones(2))


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lympho")
    _ok(["lympho", "sample", "--out", str(root), "--n-patients", "32", "--min-bag", "6", "--max-bag", "12"])
    _ok(["lympho", "tile", "--data", str(root), "--cache", str(root / "cache"), "--crop", "64"])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mean", "moe"])
def test_end_to_end(dataset: Path, model: str) -> None:
    run = dataset / f"run-{model}"
    _ok(["lympho", "train", "--cache", str(dataset / "cache"), "--out", str(run), "--model", model,
         "--no-pretrained", "--epochs", "4", "--lr", "1e-3", "--val-fraction", "0.4", "--device", "cpu",
         "--workers", "0", "--max-batch-images", "64"])
    folder = dataset / f"predictions-{model}"
    _ok(["lympho", "predict", "--checkpoint", str(run / "best.pt"), "--data", str(dataset), "--out", str(folder),
         "--scores", "--device", "cpu"])
    sub = folder / "submission.csv"
    test_ids = read_annotations(dataset / "clinical_annotation.csv").query("LABEL == -1")["ID"].tolist()
    submission = pd.read_csv(sub, dtype={"Id": str})
    assert submission["Id"].tolist() == test_ids and submission["Predicted"].isin([0, 1]).all()
    metrics = json.loads(_ok(["lympho", "evaluate", "--predictions", str(folder), "--truth",
                              str(dataset / "answers" / "test_labels.csv"), "--json", "--out",
                              str(dataset / f"evaluation-{model}")]))
    assert metrics["n"] == len(test_ids)
    assert metrics["balanced_accuracy"] > 0.7, metrics


def test_bad_input(dataset: Path, tmp_path: Path) -> None:
    csv = (dataset / "clinical_annotation.csv").read_text().splitlines()
    bad = tmp_path / "bad"
    (bad / "trainset").mkdir(parents=True)
    (bad / "clinical_annotation.csv").write_text("\n".join([csv[0], csv[1].replace("-", "/").rsplit(",", 2)[0]
                                                           + ",1943.01.02,5.0"]) + "\n")
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(bad), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "row 2" in result.output and "date of birth" in result.output
    (bad / "clinical_annotation.csv").write_text("\n".join(csv[:2] + [csv[1]]) + "\n")
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(bad), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "duplicate ID" in result.output
    (bad / "clinical_annotation.csv").write_text("\n".join(csv[:2]) + "\n")
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(bad), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "no image folder for patient" in result.output
    patient = csv[1].split(",")[1]
    label = int(csv[1].split(",")[2])
    folder = bad / ("testset" if label == -1 else "trainset") / patient
    folder.mkdir(parents=True)
    (folder / "000000.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(bad), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "000000.jpg: unreadable image" in result.output
    sub = tmp_path / "sub.csv"
    sub.write_text("Id,Predicted\nP1,1\nP1,0\n")
    with pytest.raises(DataError, match="duplicate Id P1"):
        from medchallenge.lympho.metrics import evaluate_submission

        evaluate_submission(sub, dataset / "answers" / "test_labels.csv")
