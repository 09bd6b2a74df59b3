"""The shared engine on a toy task: learns, checkpoints, resumes exactly, stops on NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.engine import TrainConfig, Trainer, warmup_cosine
from medchallenge.core.errors import DataError, OptionError, TrainingError


def _data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)


class ToyTrainer(Trainer):
    challenge = "toy"
    monitor = "accuracy"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))

    def model_spec(self) -> dict:
        return {"name": "mlp", "kwargs": {}}

    def train_dataset(self):
        return _data()

    def training_step(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def validate(self, model):
        x, y = _data(32, seed=1).tensors
        return {"accuracy": float((model(x).argmax(1) == y).float().mean())}


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(out=out, epochs=3, batch_size=8, lr=0.05, device="cpu", seed=3, warmup_epochs=1)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_writes_run_dir_and_learns(tmp_path: Path) -> None:
    result = ToyTrainer(_config(tmp_path / "run")).fit()
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "train.log", "last.pt", "best.pt", "plots/loss.png", "plots/metrics.png"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert result["best"]["accuracy"] > 0.8
    best = load_checkpoint(run / "best.pt", challenge="toy", models=["mlp"])
    assert best["metrics"]["accuracy"] == metrics["accuracy"].max()
    assert "train_state" in load_checkpoint(run / "last.pt")
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


def test_resume_replays_the_same_epochs(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "full")).fit()

    class Killed(ToyTrainer):
        def on_epoch_end(self, epoch, row):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Killed(_config(tmp_path / "part")).fit()
    assert len(pd.read_csv(tmp_path / "part" / "metrics.csv")) == 1
    ToyTrainer(_config(tmp_path / "part", resume=True)).fit()
    full = pd.read_csv(tmp_path / "full" / "metrics.csv")
    part = pd.read_csv(tmp_path / "part" / "metrics.csv")
    pd.testing.assert_frame_equal(full.drop(columns="time_s"), part.drop(columns="time_s"))
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(OptionError, match="--resume"):
        ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(OptionError, match="nothing to resume"):
        ToyTrainer(_config(tmp_path / "other", resume=True)).fit()


def test_non_finite_loss_stops(tmp_path: Path) -> None:
    class Diverges(ToyTrainer):
        def training_step(self, model, batch):
            return super().training_step(model, batch) * float("nan")

    with pytest.raises(TrainingError, match="non-finite loss"):
        Diverges(_config(tmp_path / "run")).fit()


def test_accumulation_and_step_schedule(tmp_path: Path) -> None:
    result = ToyTrainer(_config(tmp_path / "run", accumulate=2, scheduler="step", step_size=1, gamma=0.5)).fit()
    assert len(result["history"]) == 3


def test_other_challenge_checkpoint_rejected(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(DataError, match="challenge 'toy'"):
        load_checkpoint(tmp_path / "run" / "best.pt", challenge="panda")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((tmp_path / "run" / "best.pt").read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt"):
        load_checkpoint(bad)


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)
