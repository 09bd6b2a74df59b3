"""Every file the toolkit writes atomically honours the umask (shared servers)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from medchallenge.core.checkpoint import save_checkpoint
from medchallenge.core.io import atomic_open, write_csv, write_json


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_outputs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        write_csv(tmp_path / "cases.csv", pd.DataFrame({"a": [1]}))
        with atomic_open(tmp_path / "x.bin", "wb") as handle:
            handle.write(b"x")
        save_checkpoint(tmp_path / "best.pt", {"state_dict": {"w": torch.zeros(1)}})
    finally:
        os.umask(old)
    for name in ("metrics.json", "cases.csv", "x.bin", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
