"""Tiny real runs through the CLI: TensorBoard previews, predictions that know their checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

TINY = ["--model", "resnet18", "--no-pretrained", "--patch-size", "64", "--patches-per-image", "1", "--batch-size",
        "4", "--epochs", "1", "--workers", "0", "--device", "cpu"]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sample of 8 small images and two one-epoch runs of different seeds (the first with TensorBoard)."""
    root = tmp_path_factory.mktemp("midog-runs")
    data = root / "data"
    _ok(["midog", "sample", "--out", str(data), "--n-images", "8", "--size", "128"])
    _ok(["midog", "train", "--data", str(data), "--out", str(root / "a"), "--seed", "0", "--tensorboard", *TINY])
    _ok(["midog", "train", "--data", str(data), "--out", str(root / "b"), "--seed", "1", *TINY])
    return {"data": data, "a": root / "a", "b": root / "b", "root": root}


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
