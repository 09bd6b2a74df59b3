"""Runs of ``brats train`` on tiny data: TensorBoard previews, and predictions that know their checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

TINY = ["--epochs", "1", "--patches-per-epoch", "64", "--batch-size", "32", "--device", "cpu", "--workers", "0"]


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 synthetic 2021 cases (4 train, 1 test) of 2×32×32 voxels, tiled."""
    root = tmp_path_factory.mktemp("brats")
    _ok("brats", "sample", "--out", str(root), "--n-cases", "5", "--size", "32", "--n-slices", "2")
    _ok("brats", "tile", "--data", str(root), "--cache", str(root / "patches"))
    return root


def test_tensorboard_has_previews_step_losses_and_the_monitor(tiny: Path, tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    _ok("brats", "train", "--cache", str(tiny / "patches"), "--out", str(run), "--tensorboard", *TINY)
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"train/loss_step", "mean_dice", "wt_dice"} <= set(acc.Tags()["scalars"])
    val_cases = json.loads((run / "split.json").read_text())["val"] if (run / "split.json").is_file() else None
    previews = {t for t in acc.Tags()["images"] if t.startswith("preview/")}
    assert previews and len(previews) <= 2, acc.Tags()["images"]
    if val_cases is not None:
        assert previews == {f"preview/{c}" for c in val_cases[:2]}
    image = acc.Images(sorted(previews)[0])[-1]
    assert (image.width, image.height) == (32 + 4 + 32, 32)  # truth | prediction, one slice each


def test_a_retrained_checkpoint_redoes_every_prediction(tiny: Path, tmp_path: Path) -> None:
    runs = {}
    for seed in (0, 1):
        runs[seed] = tmp_path / f"run{seed}"
        _ok("brats", "train", "--cache", str(tiny / "patches"), "--out", str(runs[seed]), "--seed", str(seed), *TINY)
    out = tmp_path / "pred"
    predict = ["brats", "predict", "--data", str(tiny), "--out", str(out), "--device", "cpu"]
    _ok(*predict, "--checkpoint", str(runs[0]))

    def state() -> dict[str, tuple[int, str]]:  # case → (mtime, sha256 of the checkpoint that made it)
        return {p.name: (p.stat().st_mtime_ns, json.loads((out / ".manifest" / f"{p.name[:-7]}.json").read_text())
                         ["sha256"]) for p in out.glob("*.nii.gz")}

    first = state()
    assert len(first) == 5  # every case folder with images (4 training, 1 test)
    output = _ok(*predict, "--checkpoint", str(runs[1]))  # the run folder means its best.pt
    assert "5 output(s)" in output and "made by another checkpoint" in output and "wrote 5 prediction" in output
    second = state()
    assert all(second[c][0] != first[c][0] and second[c][1] != first[c][1] for c in first), (first, second)
    output = _ok(*predict, "--checkpoint", str(runs[1]))
    assert "wrote 0 prediction" in output and "5 made by this checkpoint already" in output, output
    assert state() == second
