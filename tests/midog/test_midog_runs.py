"""Tiny real runs through the CLI: TensorBoard previews, predictions that know their checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.midog.data import load_midog_json

TINY = ["--model", "resnet18", "--no-pretrained", "--patch-size", "64", "--patches-per-image", "1", "--batch-size",
        "4", "--epochs", "1", "--workers", "0", "--device", "cpu"]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sample of 8 small 96×72 images (6 for training) and the three one-epoch runs of ``--n-folds 3``
    in their default run folders (fold 0 with TensorBoard)."""
    root = tmp_path_factory.mktemp("midog-runs")
    data = root / "data"
    _ok(["midog", "sample", "--out", str(data), "--n-images", "8", "--size", "96"])
    cwd = os.getcwd()
    os.chdir(root)  # the default run folders go to ./runs
    try:
        for fold in range(3):
            extra = ["--tensorboard"] if fold == 0 else []
            _ok(["midog", "train", "--data", str(data), "--n-folds", "3", "--fold", str(fold), *extra, *TINY])
    finally:
        os.chdir(cwd)
    folds = sorted((p for p in (root / "runs").iterdir() if not p.is_symlink()), key=lambda p: p.name)
    return {"data": data, "root": root, "folds": folds, "a": folds[0], "b": folds[1]}


def test_tensorboard_has_previews_step_loss_and_f1(runs: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["a"] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    previews = [t for t in tags["images"] if t.startswith("preview/")]
    assert 1 <= len(previews) <= 3, tags["images"]
    assert "train/loss_step" in tags["scalars"] and "f1" in tags["scalars"] and "threshold" in tags["scalars"]
    image = events.Images(previews[0])[0]
    assert (image.width, image.height) == (64, 64)


def test_point_labels_draw_truth_rings_and_detection_squares() -> None:
    from medchallenge.midog.train import point_labels

    labels = point_labels(np.array([[32.0, 32.0]]), np.array([[10.0, 50.0]]), 64)
    assert labels[32, 32] == 0 and labels[32, 52] == 2 and labels[12, 32] == 2  # the ring, radius 20
    assert labels[50, 10] == 1 and labels[46, 6] == 1 and labels[50, 15] == 0  # the 9 px square


def test_predictions_know_their_checkpoint(runs: dict[str, Path]) -> None:
    data, out = runs["data"], runs["root"] / "pred"
    answers = json.loads((data / "answers" / "MIDOG.json").read_text())
    ids = ",".join(str(img["id"]) for img in answers["images"])
    base = ["midog", "predict", "--data", str(data), "--cases", ids, "--out", str(out), "--device", "cpu",
            "--threshold", "0.05"]
    _ok([*base, "--checkpoint", str(runs["a"])])  # a run folder: its best.pt
    manifest = json.loads((out / "manifest.json").read_text())
    stamp = (out / "detections.json").stat().st_mtime_ns
    again = _ok([*base, "--checkpoint", str(runs["a"] / "best.pt")])
    assert "skipped" in again and (out / "detections.json").stat().st_mtime_ns == stamp  # same model, same options
    retrained = _ok([*base, "--checkpoint", str(runs["b"])])
    assert "made by another checkpoint" in retrained
    redone = json.loads((out / "manifest.json").read_text())
    assert redone["sha256"] != manifest["sha256"] and (out / "detections.json").stat().st_mtime_ns != stamp
    for name in ("detections.json", "grand-challenge.json"):
        assert json.loads((out / ".manifest" / f"{name}.json").read_text())["sha256"] == redone["sha256"]
    assert "skipped" in _ok([*base, "--checkpoint", str(runs["b"])])
    assert "skipped" not in _ok([*base, "--checkpoint", str(runs["b"]), "--overlap", "0.2"])  # other options: redone


def test_folds_cover_every_training_image_once(runs: dict[str, Path]) -> None:
    annotated = {str(img["id"]) for img in json.loads((runs["data"] / "MIDOG.json").read_text())["images"]
                 if img["id"] < 151}
    seen: list[str] = []
    for k, run in enumerate(runs["folds"]):
        assert f"fold{k}" in run.name
        split = json.loads((run / "split.json").read_text())
        assert (split["n_folds"], split["fold"], split["seed"]) == (3, k, 0)
        assert not set(split["train"]) & set(split["val"]) and set(split["train"]) | set(split["val"]) == annotated
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(split["val"]) and set(oof["fold"]) == {k}
        assert (oof["n_truth"] == oof["tp"] + oof["fn"]).all() and (oof["n_detections"] == oof["tp"] + oof["fp"]).all()
        seen += split["val"]
    assert sorted(seen) == sorted(annotated)  # each image validated exactly once


def test_cv_equals_the_official_rule_on_the_pooled_images(runs: dict[str, Path]) -> None:
    """Each fold's best.pt predicts its own validation images (threshold auto); the reference scorer of
    test_midog_official on those detections, summed over the folds, is what `cv` reports."""
    from tests.midog.test_midog_official import official_aggregate, official_counts

    truth = load_midog_json(runs["data"] / "MIDOG.json")
    per_image = []
    for run in runs["folds"]:
        val = json.loads((run / "split.json").read_text())["val"]
        out = run / "val-pred"
        _ok(["midog", "predict", "--checkpoint", str(run), "--data", str(runs["data"]), "--cases", ",".join(val),
             "--out", str(out), "--device", "cpu", "--format", "points"])
        found = json.loads((out / "detections.json").read_text())
        for image_id in val:
            img = truth[int(image_id)]
            points = [(d["x"], d["y"]) for d in found[img.file_name]]
            per_image.append(official_counts([tuple(p) for p in img.mitoses], points, 30.0))
    expected = official_aggregate(per_image)
    result = CliRunner().invoke(app, ["midog", "cv", *map(str, runs["folds"]), "--out", str(runs["root"] / "cv"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["challenge"] == "midog" and report["n"] == 6
    assert [report[k] for k in ("tp", "fp", "fn")] == [expected[k] for k in ("tp", "fp", "fn")]
    assert report["score"] == pytest.approx(expected["f1"]) if expected["f1"] is not None else report["score"] is None
    assert (runs["root"] / "cv" / "metrics.json").is_file() and (runs["root"] / "cv" / "cases.csv").is_file()


def test_cv_score_keeps_the_null_rules() -> None:
    from medchallenge.midog.metrics import cv_score

    none = cv_score(pd.DataFrame({"id": ["1", "2"], "tp": [0, 0], "fp": [0, 0], "fn": [0, 0]}))
    assert all(np.isnan(none[k]) for k in ("f1", "precision", "recall"))  # neither mitoses nor detections
    some = cv_score(pd.DataFrame({"id": ["1", "2"], "tp": [2, 1], "fp": [1, 0], "fn": [0, 3]}))
    assert some["f1"] == pytest.approx(6 / 10) and some["precision"] == pytest.approx(3 / 4)


def test_cv_refuses_runs_of_other_splits_and_a_fold_twice(runs: dict[str, Path]) -> None:
    import shutil

    other = runs["root"] / "other-seed"
    shutil.copytree(runs["folds"][1], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "seed": 5}))
    result = CliRunner().invoke(app, ["midog", "cv", str(runs["folds"][0]), str(other), "--out", str(runs["root"] / "x")])
    assert result.exit_code == 2 and "different splits" in result.output and len(result.output.strip().splitlines()) == 1
    twice = runs["root"] / "fold0-copy"
    shutil.copytree(runs["folds"][0], twice)
    result = CliRunner().invoke(app, ["midog", "cv", str(runs["folds"][0]), str(twice), "--out", str(runs["root"] / "x")])
    assert result.exit_code == 2 and "fold 0 given twice" in result.output


def _predict(runs: dict[str, Path], out: str, *args: str) -> str:
    """grand-challenge.json (every candidate with its probability) of the first test image."""
    answers = json.loads((runs["data"] / "answers" / "MIDOG.json").read_text())
    ids = str(answers["images"][0]["id"])
    _ok(["midog", "predict", "--data", str(runs["data"]), "--cases", ids, "--out", str(runs["root"] / out),
         "--device", "cpu", "--format", "grand-challenge", *args])
    return (runs["root"] / out / "grand-challenge.json").read_text()


def test_ensembles_and_tta_of_real_checkpoints(runs: dict[str, Path]) -> None:
    a, b = str(runs["a"] / "best.pt"), str(runs["b"] / "best.pt")
    alone = _predict(runs, "ens-a", "--checkpoint", a)
    assert json.loads(alone) and any(doc["points"] for doc in json.loads(alone).values())  # something to compare
    assert _predict(runs, "ens-aa", "--checkpoint", a, "--checkpoint", a) == alone  # bit for bit
    both = _predict(runs, "ens-ab", "--checkpoint", a, "--checkpoint", b)
    assert both != alone and both != _predict(runs, "ens-b", "--checkpoint", b)
    assert _predict(runs, "tta-a", "--checkpoint", a, "--tta") != alone
    ensemble = json.loads((runs["root"] / "ens-ab" / "manifest.json").read_text())
    assert ensemble["options"]["tta"] is False and ensemble["sha256"] != json.loads(
        (runs["root"] / "ens-a" / "manifest.json").read_text())["sha256"]
