"""Runs of a batch user: predictions that know their model, TensorBoard previews (tiny data, 1 epoch)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

pytestmark = pytest.mark.slow

TRAIN = ["--model", "resnet18", "--no-pretrained", "--batch-size", "4", "--lr", "1e-3", "--workers", "0",
         "--device", "cpu", "--epochs", "1"]
UNET = ["--model", "unet", "--width", "4", "--depth", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
        "--epochs", "1"]


@pytest.fixture(autouse=True)
def _log_to_this_runner() -> Iterator[None]:
    """Log lines reach this test's CliRunner output (core.console binds to the first CLI call's stderr)."""
    logger = logging.getLogger("medchallenge")
    saved = logger.handlers[:], getattr(logger, "_medchallenge_configured", False)
    logger.handlers.clear()
    logger._medchallenge_configured = False  # type: ignore[attr-defined]
    yield
    logger.handlers[:] = saved[0]
    logger._medchallenge_configured = saved[1]  # type: ignore[attr-defined]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("panda-runs")
    _ok(["panda", "sample", "--out", str(root / "data"), "--n-slides", "12", "--size", "256", "--seed", "0"])
    _ok(["panda", "tile", "--data", str(root / "data"), "--cache", str(root / "tiles"), "--level", "1",
         "--n-tiles", "4", "--tile-size", "16"])
    return root


def test_predict_redoes_what_another_checkpoint_made(small: Path) -> None:
    for seed in (0, 1):
        _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(small / f"run{seed}"), "--seed",
             str(seed), *TRAIN])
    out = small / "predictions"
    predict = ["panda", "predict", "--data", str(small / "data"), "--out", str(out), "--device", "cpu"]
    _ok([*predict, "--checkpoint", str(small / "run0")])
    first = json.loads((out / ".manifest" / "submission.csv.json").read_text())
    log = _ok([*predict, "--checkpoint", str(small / "run1")])
    assert "made by another checkpoint" in log, log
    second = json.loads((out / ".manifest" / "submission.csv.json").read_text())
    assert second["sha256"] != first["sha256"] and second["checkpoint"] == str((small / "run1" / "best.pt").resolve())
    stamp = (out / "submission.csv").stat().st_mtime_ns
    log = _ok([*predict, "--checkpoint", str(small / "run1")])
    assert "made by this checkpoint with the same options: kept" in log
    assert (out / "submission.csv").stat().st_mtime_ns == stamp
    log = _ok([*predict, "--checkpoint", str(small / "run1"), "--tta"])  # other options: redone
    assert "other options" in log and (out / "submission.csv").stat().st_mtime_ns != stamp


def test_mask_prediction_redoes_what_another_unet_made(small: Path) -> None:
    for seed in (0, 1):
        _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(small / f"unet{seed}"), "--seed",
             str(seed), *UNET])
    out = small / "masks"
    predict = ["panda", "predict", "--cache", str(small / "tiles"), "--out", str(out), "--device", "cpu",
               "--n-overlays", "0"]
    _ok([*predict, "--checkpoint", str(small / "unet0" / "best.pt")])
    masks = sorted((out / "masks").glob("*.npz"))
    stamps = {p.name: p.stat().st_mtime_ns for p in masks}
    assert len(masks) == 9 and len(list((out / ".manifest").glob("*.json"))) == 9
    assert "segmenting 0 of 9" in _ok([*predict, "--checkpoint", str(small / "unet0" / "best.pt")])
    # an ensemble of the same U-Net twice writes exactly its masks; --tta (mirrored views) runs too
    pair = small / "masks-pair"
    _ok(["panda", "predict", "--cache", str(small / "tiles"), "--out", str(pair), "--device", "cpu", "--n-overlays",
         "0", "--checkpoint", str(small / "unet0"), "--checkpoint", str(small / "unet0"), "--tta"])
    _ok(["panda", "predict", "--cache", str(small / "tiles"), "--out", str(pair), "--device", "cpu", "--n-overlays",
         "0", "--checkpoint", str(small / "unet0"), "--checkpoint", str(small / "unet0")])
    for path in masks:
        with np.load(path) as one, np.load(pair / "masks" / path.name) as two:
            assert np.array_equal(one["masks"], two["masks"])
    log = _ok([*predict, "--checkpoint", str(small / "unet1" / "best.pt")])
    assert "9 output(s)" in log and "made by another checkpoint" in log and "segmenting 9 of 9" in log
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in masks)


def test_tensorboard_previews_of_the_classifier_and_the_unet(small: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    for name, args, monitor in (("tb-cls", TRAIN, "qwk"), ("tb-unet", UNET, "dice")):
        run = small / name
        _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(run), "--tensorboard", *args])
        acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
        acc.Reload()
        assert {"train/loss_step", monitor} <= set(acc.Tags()["scalars"]), acc.Tags()
        images = [t for t in acc.Tags()["images"] if t.startswith("preview/")]
        if name == "tb-cls":  # the tile mosaic of each (≤ 3) validation slide, truth and prediction in the tag
            assert len(images) == 2 and all("_isup" in t and "_pred" in t for t in images), images
            image = acc.Images(images[0])[-1]
            assert (image.width, image.height) == (32, 32)  # 2×2 mosaic of 16 px tiles
        else:  # truth | prediction overlays of validation slides with foreground
            assert 1 <= len(images) <= 2, images
            image = acc.Images(images[0])[-1]
            assert image.width > image.height
