"""Every test runs in its own temporary folder: `evaluate` writes ./evaluation by default, never into the repo.

``lits_sample``: one tiny synthetic LiTS folder with its patch cache, shared by the tests that train.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

# one epoch of 64 patches of a TwoPathCNN from scratch: a few seconds on a CPU
TINY_TRAIN = ["--transfer", "none", "--epochs", "1", "--patches-per-epoch", "64", "--batch-size", "32",
              "--device", "cpu", "--workers", "0"]


@pytest.fixture(autouse=True)
def _in_tmp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> str:
    """Run the CLI; fail the test with its output unless it exits 0; returns stdout + stderr."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


@pytest.fixture(scope="session")
def lits_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 volumes of 4 slices of 32×32 (4 training, 2 test) and their patch cache in ``patches``."""
    root = tmp_path_factory.mktemp("lits-sample")
    invoke("lits", "sample", "--out", root, "--n-cases", "6", "--size", "32", "--n-slices", "4")
    invoke("lits", "tile", "--data", root, "--cache", root / "patches")
    return root


@pytest.fixture(scope="session")
def fold_runs(lits_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The three runs of ``train --n-folds 3 --fold K`` (default run names, TensorBoard on), fold order."""
    home = tmp_path_factory.mktemp("lits-folds")
    before = Path.cwd()
    os.chdir(home)  # the default run folder is ./runs/<name>: never the repository
    try:
        for k in range(3):
            invoke("lits", "train", "--cache", lits_sample / "patches", "--n-folds", "3", "--fold", str(k),
                   "--tensorboard", *TINY_TRAIN)
    finally:
        os.chdir(before)
    runs = sorted(p for p in (home / "runs").iterdir() if not p.is_symlink())
    assert len(runs) == 3, runs
    return sorted(runs, key=lambda run: json.loads((run / "split.json").read_text())["fold"])
