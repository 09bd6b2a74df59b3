"""Shared fixtures: the real data folder (skip when absent, fail under CI) and the CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

os.environ.setdefault("MEDCHALLENGE_PLAIN", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``: skipped when absent, except under CI where absence fails."""
    if not REALDATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REALDATA} is missing under CI")
        pytest.skip(f"{REALDATA} not present")
    return REALDATA


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
