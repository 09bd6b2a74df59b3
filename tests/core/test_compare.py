"""`medchallenge compare`: differing options, best metric and epoch, one plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medchallenge.cli import app


def test_compare_two_tiny_runs_lists_the_differing_options(tmp_path: Path) -> None:
    from test_engine import ToyTrainer, _config

    ToyTrainer(_config(tmp_path / "a", epochs=2, lr=0.05), {"width": 16}).fit()
    ToyTrainer(_config(tmp_path / "b", epochs=2, lr=0.01), {"width": 32}).fit()
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                      str(tmp_path / "cmp"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    differ = report["differing_options"]
    assert set(differ) == {"lr", "optimizer.lr", "options.width"}  # the config and the optimizer that ran
    assert differ["optimizer.lr"] == [0.05, 0.01]  # the peak rate, not the warm-up start
    assert differ["options.width"] == [16, 32] and differ["lr"] == [0.05, 0.01]
    for row, run in zip(report["runs"], ("a", "b")):
        metrics = pd.read_csv(tmp_path / run / "metrics.csv")
        assert row["best"] == metrics["accuracy"].max()
        assert row["best_epoch"] == int(metrics.loc[metrics["accuracy"].idxmax(), "epoch"])
        assert row["epochs"] == 2 and row["samples_per_s"] > 0
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "compare.csv").is_file()


def test_compare_needs_run_folders(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "x"), str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a run folder" in result.output
