"""Run folders: unique names, runs/latest, no orphan folder after a failed start, RUN as --checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.errors import DataError
from medchallenge.core.runs import default_run_dir, link_latest, run_name


def test_two_runs_started_in_the_same_second_get_two_names(monkeypatch) -> None:
    monkeypatch.setattr("time.strftime", lambda fmt: "20261123-200000")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "991")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    names = {run_name("unet", fold=2) for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"unet-fold2-20261123-200000-j991-t7-[0-9a-f]{4}", n) for n in names)
    assert default_run_dir("unet").parent == Path("runs")


def test_latest_points_at_the_newest_run_and_never_replaces_a_real_folder(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        link_latest(tmp_path / name)
    assert (tmp_path / "latest").resolve() == (tmp_path / "b").resolve()
    other = tmp_path / "other"
    (other / "latest").mkdir(parents=True)
    (other / "c").mkdir()
    link_latest(other / "c")
    assert (other / "latest").is_dir() and not (other / "latest").is_symlink()


def test_failed_start_leaves_no_run_folder(tmp_path: Path) -> None:
    from test_engine import ToyTrainer, _config

    class MissingWeights(ToyTrainer):
        def prepare_model(self, model):
            raise DataError(tmp_path / "hub" / "resnet18.pth", "pretrained weights not found")

    with pytest.raises(DataError):
        MissingWeights(_config(tmp_path / "runs" / "x")).fit()
    assert not (tmp_path / "runs").exists()


def test_a_run_folder_is_a_checkpoint_and_latest_is_linked(tmp_path: Path) -> None:
    from test_engine import ToyTrainer, _config

    ToyTrainer(_config(tmp_path / "runs" / "toy-1", epochs=1)).fit()
    assert load_checkpoint(tmp_path / "runs" / "toy-1", challenge="toy")["epoch"] == 1
    assert load_checkpoint(tmp_path / "runs" / "latest", challenge="toy")["epoch"] == 1
