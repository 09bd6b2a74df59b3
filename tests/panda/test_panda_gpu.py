"""PANDA on CUDA through the CLI: AMP + channels_last training that learns (ResNet18), EfficientNet-B0 compiled,
predict with TTA on the GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

pytestmark = pytest.mark.gpu


def test_amp_channels_last_on_cuda(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    for args in (
        ["panda", "sample", "--out", str(data), "--n-slides", "48", "--size", "1024"],
        ["panda", "tile", "--data", str(data), "--cache", str(tmp_path / "tiles"), "--n-tiles", "16", "--tile-size", "32"],
        ["panda", "train", "--cache", str(tmp_path / "tiles"), "--out", str(tmp_path / "run"), "--model",
         "resnet18", "--no-pretrained", "--epochs", "8", "--batch-size", "8", "--lr", "1e-3", "--device",
         "cuda", "--channels-last", "--workers", "2"],
        ["panda", "train", "--cache", str(tmp_path / "tiles"), "--out", str(tmp_path / "effnet"), "--model",
         "efficientnet-b0", "--no-pretrained", "--epochs", "1", "--batch-size", "8", "--device", "cuda",
         "--channels-last", "--compile"],
        ["panda", "predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(data), "--out",
         str(tmp_path / "pred"), "--device", "cuda", "--tta"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    out = runner.invoke(app, ["panda", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                              str(data / "answers" / "test_labels.csv"), "--json", "--out", str(tmp_path / "ev")])
    metrics = json.loads(out.stdout)
    print("gpu resnet18 held-out", metrics["qwk"], metrics["accuracy"])
    # Learning is asserted by the CPU end-to-end test; on 12 held-out slides the QWK of an 8-epoch
    # GPU run swings between 0 and 0.7 from run to run (cuDNN is not bit-deterministic), as on CPU
    # with other seeds: here the GPU paths must run and produce a complete, valid submission.
    assert metrics["n"] == 12 and -1.0 <= metrics["qwk"] <= 1.0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "amp=torch.bfloat16" in log or "amp=torch.float16" in log


def test_unet_and_mask_guided_classifier_on_cuda(tmp_path: Path) -> None:
    """The U-Net (bf16, channels_last, shuffled tiles) and the 4-channel EfficientNet with gradient
    checkpointing, trained and predicting on the GPU through the CLI."""
    runner = CliRunner()
    data, tiles = tmp_path / "data", tmp_path / "tiles"
    unet = tmp_path / "unet" / "best.pt"
    for args in (
        ["panda", "sample", "--out", str(data), "--n-slides", "48", "--size", "1024"],
        ["panda", "tile", "--data", str(data), "--cache", str(tiles), "--n-tiles", "16", "--tile-size", "32"],
        ["panda", "train", "--model", "unet", "--cache", str(tiles), "--out", str(tmp_path / "unet"), "--epochs", "8",
         "--batching", "shuffle", "--batch-size", "64", "--lr", "2e-3", "--device", "cuda", "--channels-last"],
        ["panda", "predict", "--checkpoint", str(unet), "--cache", str(tiles), "--out", str(tmp_path / "masks"),
         "--device", "cuda"],
        ["panda", "train", "--cache", str(tiles), "--out", str(tmp_path / "masked"), "--mask-model", str(unet),
         "--model", "efficientnet-b0", "--no-pretrained", "--grad-checkpoint", "--epochs", "2", "--batch-size", "4",
         "--device", "cuda", "--channels-last"],
        ["panda", "predict", "--checkpoint", str(tmp_path / "masked" / "best.pt"), "--data", str(data),
         "--mask-model", str(unet), "--out", str(tmp_path / "pred"), "--device", "cuda"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    seg = json.loads(runner.invoke(app, ["panda", "evaluate", "--masks", str(tmp_path / "masks"), "--truth", str(tiles),
                                         "--json", "--out", str(tmp_path / "ev-masks")]).stdout)
    print("gpu unet tumour Dice", {p: s["tumour_dice"] for p, s in seg["providers"].items()})
    assert seg["all"]["tumour_dice"] > 0.5
    out = runner.invoke(app, ["panda", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                              str(data / "answers" / "test_labels.csv"), "--json", "--out", str(tmp_path / "ev")])
    assert json.loads(out.stdout)["n"] == 12
