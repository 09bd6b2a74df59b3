"""Lymphocytosis runs (issues 13 and 14): predictions that know their checkpoint, TensorBoard previews,
validation progress in batch logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core import console

TRAIN = ["--no-pretrained", "--epochs", "1", "--device", "cpu", "--workers", "0", "--batch-size", "4"]


def _ok(args: list[str]):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic patients of 2-3 images, cached at a 32 px crop."""
    root = tmp_path_factory.mktemp("lympho-runs")
    _ok(["lympho", "sample", "--out", str(root), "--n-patients", "16", "--min-bag", "2", "--max-bag", "3"])
    _ok(["lympho", "tile", "--data", str(root), "--cache", str(root / "cache"), "--crop", "32"])
    return root


def _train(dataset: Path, name: str, *extra: str) -> Path:
    run = dataset / "runs" / name
    _ok(["lympho", "train", "--cache", str(dataset / "cache"), "--out", str(run), *TRAIN, *extra])
    return run


@pytest.fixture(scope="module")
def two_runs(dataset: Path) -> tuple[Path, Path]:
    """Two clinical-model runs that differ only by their seed."""
    return (_train(dataset, "a", "--model", "clinical", "--seed", "0"),
            _train(dataset, "b", "--model", "clinical", "--seed", "1"))


def test_predictions_know_their_checkpoint(dataset: Path, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "predictions"
    base = ["lympho", "predict", "--data", str(dataset), "--out", str(out), "--device", "cpu", "--scores"]
    _ok([*base, "--checkpoint", str(two_runs[0])])
    first = (out / "submission.csv").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"] == str((two_runs[0] / "best.pt").resolve()) and manifest["options"]["scores"]
    again = _ok([*base, "--checkpoint", str(two_runs[0])])  # same checkpoint and options: nothing redone
    assert "skipped" in again.stderr and (out / "submission.csv").read_text() == first
    other = _ok([*base, "--checkpoint", str(two_runs[1])])  # retrained: redone, and said
    assert "made by another checkpoint" in other.stderr
    assert (out / "submission.csv").read_text() != first  # another model's scores
    assert json.loads((out / "manifest.json").read_text())["sha256"] != manifest["sha256"]
    without = _ok([*base[:-1], "--checkpoint", str(two_runs[1])])  # other options (no Score column): redone
    assert "other options" in without.stderr and "Score" not in (out / "submission.csv").read_text()
    parts = tmp_path / "parts"
    for part in ("1/2", "2/2"):
        _ok([*base[:5], str(parts), "--device", "cpu", "--checkpoint", str(two_runs[0]), "--part", part])
    assert (parts / "submission.csv").is_file()
    (parts / "submission.csv").unlink()
    redo = _ok([*base[:5], str(parts), "--device", "cpu", "--checkpoint", str(two_runs[1]), "--part", "1/2"])
    assert "made by another checkpoint" in redo.stderr and "not merging" in redo.stderr  # part 2/2 is stale
    assert not (parts / "submission.csv").exists()


def test_tensorboard_previews_and_validation_progress(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    tracked: list[str] = []
    original = console.track

    def spy(items, description, total=None):  # type: ignore[no-untyped-def]
        tracked.append(description)
        return original(items, description, total)

    monkeypatch.setattr(console, "track", spy)
    run = _train(dataset, "tb", "--model", "attention", "--tensorboard")
    assert "validation" in tracked  # the whole-set validation reports progress in batch logs
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert {t for t in images if t.startswith("preview/")} and any("(malignant)" in t for t in images), images
    assert any("(reactive)" in t for t in images), images
    assert {"train/loss_step", "balanced_accuracy"} <= set(acc.Tags()["scalars"]), acc.Tags()["scalars"]
    shot = acc.Images([t for t in images if "(malignant)" in t][0])[0]
    assert shot.width >= 2 * 96 and shot.height == 96 + 14  # 2-3 images of 32 px enlarged to 96, captioned
