"""``train --resume RUN``: the run's own options come back from config.json; changes are refused.

A toy ``train`` command built like every challenge's (``@report_errors`` + ``@engine_flags``)
trains a tiny MLP, so the rules are tested once here; the contract test checks that every
challenge's ``train`` has the same flag.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Annotated, Optional

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from medchallenge.core import options as opt
from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.cliflags import EngineFlags, choices, engine_flags

Act = choices("Act", "relu", "tanh")


def _app() -> typer.Typer:
    from test_engine import ToyTrainer

    class Toy(ToyTrainer):
        def build_model(self) -> nn.Module:
            torch.manual_seed(0)
            act = nn.ReLU() if self.options["act"] == "relu" else nn.Tanh()
            return nn.Sequential(nn.Linear(4, self.options["width"]), act, nn.Dropout(0.2),
                                 nn.Linear(self.options["width"], 2))

        def model_spec(self) -> dict:
            return {"name": "mlp", "kwargs": {"width": self.options["width"]}}

        def training_step(self, model, batch):
            self._n = getattr(self, "_n", 0) + 1
            if os.environ.get("TOY_SIGTERM_AT") == f"{self.epoch}:{self._n}":
                os.kill(os.getpid(), signal.SIGTERM)  # what Slurm sends at the time limit
            return super().training_step(model, batch)

        def on_epoch_start(self, epoch, model, optimizer):
            self._n = 0

    app = typer.Typer()

    @app.command()
    @opt.report_errors
    @engine_flags(epochs=3, batch_size=8, lr=0.05, device="cpu", workers=0, seed=3)
    def train(
        width: Annotated[int, typer.Option("--width")] = 16,
        act: Annotated[Act, typer.Option("--act")] = Act.relu,
        data: Annotated[Path, typer.Option("--data")] = Path("."),
        out: Annotated[Optional[Path], typer.Option("--out")] = None,
        *,
        engine: EngineFlags,
    ) -> None:
        out = out or Path("runs") / "toy-default"
        Toy(engine.config(out, warmup_epochs=1), {"width": width, "act": act.value, "data": data}).fit()

    @app.command()
    def other() -> None:  # a second command keeps `train` a subcommand, as in the real CLI
        pass

    return app


def _run(args: list[str], code: int = 0, env: dict[str, str] | None = None):
    result = CliRunner().invoke(_app(), args, env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a / "last.pt")["state_dict"], load_checkpoint(b / "last.pt")["state_dict"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_config_json_records_every_option_as_run(tmp_path: Path) -> None:
    _run(["train", "--out", str(tmp_path / "run"), "--width", "8", "--act", "tanh", "--epochs", "1"])
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["command_options"]
    assert recorded["width"] == 8 and recorded["act"] == "tanh" and recorded["epochs"] == 1
    assert recorded["data"] == str(Path(".").absolute())  # input paths absolute
    assert "resume" not in recorded


def test_sigterm_then_resume_without_options_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    common = ["--width", "8", "--act", "tanh", "--scheduler", "cosine"]
    _run(["train", *common, "--out", str(tmp_path / "full")])
    result = _run(["train", *common, "--out", str(tmp_path / "cut")], code=75, env={"TOY_SIGTERM_AT": "1:3"})
    assert f"--resume {tmp_path / 'cut'}" in result.output
    _run(["train", "--resume", str(tmp_path / "cut")])  # nothing retyped
    _same_weights(tmp_path / "full", tmp_path / "cut")


def test_resume_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _run(["train", "--width", "8", "--epochs", "1"])  # runs/toy-default, linked as runs/latest
    assert (tmp_path / "runs" / "latest").is_symlink()
    _run(["train", "--resume", "latest", "--epochs", "2"])  # more epochs: safe, and said
    history = json.loads((tmp_path / "runs" / "toy-default" / "config.json").read_text())
    assert history["epochs"] == 2 and history["command_options"]["width"] == 8
    assert len(load_checkpoint(tmp_path / "runs" / "toy-default" / "last.pt")["train_state"]["history"]) == 2


def test_changed_architecture_is_one_line_exit_2_and_leaves_the_run_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(["train", "--width", "8", "--epochs", "1", "--out", str(run)])
    before = {p.name: _sha(p) for p in run.iterdir() if p.is_file()}
    result = _run(["train", "--resume", str(run), "--width", "16", "--act", "tanh", "--epochs", "2"], code=2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "--width 16 (run: 8)" in lines[0] and "--act tanh (run: relu)" in lines[0]
    assert "--epochs" not in lines[0]  # more epochs is a safe change
    assert {p.name: _sha(p) for p in run.iterdir() if p.is_file()} == before


def test_fewer_epochs_and_another_out_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(["train", "--epochs", "2", "--out", str(run)])
    assert "--epochs 1 (run: 2)" in _run(["train", "--resume", str(run), "--epochs", "1"], code=2).output
    assert "--out" in _run(["train", "--resume", str(run), "--out", str(tmp_path / "x")], code=2).output


@pytest.mark.parametrize("broken", ["missing", "no-config", "no-last"])
def test_resume_of_what_is_not_a_run_is_one_line(tmp_path: Path, broken: str) -> None:
    run = tmp_path / "run"
    if broken != "missing":
        _run(["train", "--epochs", "1", "--out", str(run)])
        (run / ("config.json" if broken == "no-config" else "last.pt")).unlink()
    result = _run(["train", "--resume", str(run)], code=2)
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert str(run) in result.output
