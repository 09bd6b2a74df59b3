"""KiTS runs for batch jobs (issue 13): predictions that know their checkpoint, TensorBoard previews,
validation progress in batch logs; ``--mirror/--no-mirror`` reaching the Dataset and the records
(issue 14). Two tiny runs (seeds 0 and 1, the second ``--no-mirror``) on 4 synthetic 32 px cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.manifest import checkpoint_hash
from medchallenge.kits import train as kits_train

TINY = ["--epochs", "1", "--batch-size", "4", "--patch-size", "32", "--depth", "2", "--width", "4", "--device", "cpu",
        "--workers", "0"]


def _ok(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits-runs")
    _ok(["kits", "sample", "--out", str(root), "--n-cases", "4", "--size", "32", "--seed", "3"])
    _ok(["kits", "tile", "--data", str(root), "--cache", str(root / "slices")])
    real = kits_train.random_mirror

    def spy(arrays: Any, rng: Any = None) -> Any:  # counts the training items mirrored per run
        MIRROR_CALLS[run] = MIRROR_CALLS.get(run, 0) + 1
        return real(arrays, rng)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kits_train, "random_mirror", spy)
        run = "a"
        _ok(["kits", "train", "--cache", str(root / "slices"), "--out", str(root / "a"), "--seed", "0",
             "--tensorboard", *TINY])
        run = "b"
        _ok(["kits", "train", "--cache", str(root / "slices"), "--out", str(root / "b"), "--seed", "1",
             "--no-mirror", *TINY])
    return root


MIRROR_CALLS: dict[str, int] = {}


def test_mirror_option_reaches_the_dataset_and_the_records(runs: Path) -> None:
    import torch

    assert MIRROR_CALLS.get("a", 0) > 0 and MIRROR_CALLS.get("b", 0) == 0, MIRROR_CALLS  # every item, or none
    for run, mirror in (("a", True), ("b", False)):
        assert json.loads((runs / run / "config.json").read_text())["options"]["mirror"] is mirror
        assert torch.load(runs / run / "best.pt", weights_only=True)["config"]["options"]["mirror"] is mirror


def test_predictions_are_redone_for_another_checkpoint(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    base = ["kits", "predict", "--data", str(runs), "--out", str(out), "--device", "cpu"]
    _ok([*base, "--checkpoint", str(runs / "a")])  # a run folder: its best.pt
    names = sorted(p.name for p in out.glob("prediction_*.nii.gz"))
    assert len(names) == 4
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}
    records = {n: json.loads((out / ".manifest" / f"{n}.json").read_text()) for n in names}
    assert {r["sha256"] for r in records.values()} == {checkpoint_hash(runs / "a" / "best.pt")}
    # the same checkpoint and options again: nothing redone
    result = _ok([*base, "--checkpoint", str(runs / "a" / "best.pt")])
    assert {n: (out / n).stat().st_mtime_ns for n in names} == stamps
    assert "wrote 0 prediction(s)" in result.output and "another checkpoint" not in result.output
    # the second run's checkpoint into the same folder: every output redone, and said so
    result = _ok([*base, "--checkpoint", str(runs / "b")])
    assert "4 output(s)" in result.output and "made by another checkpoint" in result.output
    assert all((out / n).stat().st_mtime_ns != stamps[n] for n in names)
    assert {json.loads((out / ".manifest" / f"{n}.json").read_text())["sha256"] for n in names} == {
        checkpoint_hash(runs / "b" / "best.pt")}
    assert json.loads((out / "manifest.json").read_text())["checkpoint"] == str((runs / "b" / "best.pt").resolve())
    result = _ok([*base, "--checkpoint", str(runs / "b")])
    assert "wrote 0 prediction(s)" in result.output


def test_tensorboard_has_previews_step_loss_and_the_monitor(runs: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(runs / "a" / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    previews = [t for t in tags["images"] if t.startswith("preview/case_")]
    assert previews and len(previews) <= 3, tags["images"]
    assert "train/loss_step" in tags["scalars"] and "composite_dice" in tags["scalars"]
    image = acc.Images(previews[0])[0]
    assert image.step == 1 and image.width == 2 * 32 + 4 and image.height == 32  # truth | prediction
    assert not (runs / "b" / "tensorboard").exists()


def test_validation_reports_progress(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medchallenge.core import console

    seen: list[tuple[str, int | None]] = []
    track = console.track

    def spy(items: Any, description: str, total: int | None = None) -> Any:
        seen.append((description, total))
        return track(items, description, total)

    monkeypatch.setattr(console, "track", spy)
    _ok(["kits", "train", "--cache", str(runs / "slices"), "--out", str(tmp_path / "run"), *TINY])
    assert ("validation", 1) in seen  # 3 training cases → 1 validation case at --val-fraction 0.2
