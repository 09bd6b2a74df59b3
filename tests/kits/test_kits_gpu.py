"""KiTS on CUDA: AMP + channels_last training and batched whole-volume prediction (CUDA only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import read_geometry, read_volume

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


def test_kits_pipeline_on_cuda(tmp_path: Path) -> None:
    _ok(["kits", "sample", "--out", str(tmp_path), "--n-cases", "12", "--size", "96"])
    _ok(["kits", "tile", "--data", str(tmp_path), "--cache", str(tmp_path / "slices")])
    _ok(["kits", "train", "--cache", str(tmp_path / "slices"), "--out", str(tmp_path / "run"), "--epochs", "8",
         "--batch-size", "8", "--patch-size", "96", "--depth", "3", "--width", "16", "--batch-norm",
         "--loss", "dice-ce", "--oversample", "0.5", "--device", "cuda", "--amp", "--channels-last",
         "--workers", "2"])
    _ok(["kits", "predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path),
         "--out", str(tmp_path / "pred"), "--cases", "210-212", "--device", "cuda", "--batch-size", "4"])
    for number in (210, 211, 212):
        pred = read_volume(tmp_path / "pred" / f"prediction_{number:05d}.nii.gz")
        assert pred.geometry == read_geometry(tmp_path / "data" / f"case_{number:05d}" / "imaging.nii.gz")
        assert pred.array.dtype == np.uint8 and pred.array.max() <= 2
    metrics = json.loads(_ok(["kits", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                              str(tmp_path / "answers"), "--out", str(tmp_path / "ev"), "--json"]))
    assert metrics["kidney_dice"] > 0.5, metrics
