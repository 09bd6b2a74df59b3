"""Pre-emption: SIGTERM mid-epoch saves the position; --resume ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.errors import Preempted


class Dropping:
    """Mixin: dropout in the model and randomness in the step, so RNG state matters to the result."""

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))

    def training_step(self, model, batch):
        x, y = batch
        noise = torch.randn_like(x) * 0.1  # consumes the torch RNG like an augmentation
        return nn.functional.cross_entropy(model(x + noise), y)


def _trainers():
    from test_engine import ToyTrainer

    class Plain(Dropping, ToyTrainer):
        pass

    class SignalledAt(Plain):
        stop_at = (1, 3)  # (epoch, batch) at which the scheduler sends SIGTERM

        def training_step(self, model, batch):
            self._batch = getattr(self, "_batch", 0) + 1
            if (self.epoch, self._batch) == self.stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().training_step(model, batch)

        def on_epoch_start(self, epoch, model, optimizer):
            self._batch = 0

    return Plain, SignalledAt


@pytest.mark.parametrize("accumulate", [1, 2])
def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path: Path, accumulate: int) -> None:
    from test_engine import _config

    Plain, SignalledAt = _trainers()
    kw = dict(epochs=3, accumulate=accumulate)
    Plain(_config(tmp_path / "full", **kw)).fit()
    with pytest.raises(Preempted, match="--resume"):
        SignalledAt(_config(tmp_path / "cut", **kw)).fit()
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    position = state["train_state"]["position"]
    assert position["epoch"] == 1 and position["batches_done"] == (3 if accumulate == 1 else 4)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    Plain(_config(tmp_path / "cut", resume=True, **kw)).fit()
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_preempted_is_exit_75_with_one_line(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from medchallenge.core.options import report_errors

    app = typer.Typer()

    @app.command()
    @report_errors
    def train() -> None:
        raise Preempted("signal received: saved runs/x/last.pt at epoch 2, step 3/8")

    @app.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 75
    assert result.output.strip() == "stopped: signal received: saved runs/x/last.pt at epoch 2, step 3/8"


def test_checkpoint_every_saves_inside_the_epoch(tmp_path: Path, monkeypatch) -> None:
    from test_engine import _config

    Plain, _ = _trainers()
    clock = iter(range(0, 100000, 61))  # every call to monotonic() is a minute later
    monkeypatch.setattr("medchallenge.core.engine.trainer.time.monotonic", lambda: float(next(clock)))
    saves = []
    original = Plain._after_step

    def spy(self, run, position):
        original(self, run, position)
        saves.append(load_checkpoint(tmp_path / "run" / "last.pt")["train_state"].get("position"))

    monkeypatch.setattr(Plain, "_after_step", spy)
    Plain(_config(tmp_path / "run", epochs=1, checkpoint_every=1.0)).fit()
    assert [p["batches_done"] for p in saves if p is not None] == [1, 2, 3, 4, 5, 6, 7]
