"""--mirror (nnU-Net's training mirroring) in the Havaei patch training of BraTS and LiTS: the patches
the trainer's loader yields include the H-, W- and HW-mirrored copies of a hand-made asymmetric patch,
none with --no-mirror; the centre label is unchanged; the option is recorded in config.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.brats.train import BratsTrainer, HavaeiOptions
from medchallenge.cli import app
from medchallenge.core.cache import CacheDir
from medchallenge.core.engine import TrainConfig
from medchallenge.havaei.patches import write_case

SIZE = 33  # TwoPathCNN's patch


def _asymmetric() -> np.ndarray:
    """4×33×33: a ramp in W plus a different ramp in H, so each of the four mirrorings differs."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    return np.stack([xx + 100 * yy + c for c in range(4)]) / 1000


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    """Two hand-made 1-slice cases whose only sampled centre is the middle of the asymmetric patch (class 2)."""
    root = tmp_path / "cache"
    CacheDir(root, "brats-patches").open_for_writing(
        {"channels": ["flair", "t1", "t1ce", "t2"], "label_values": [0, 1, 2, 4], "normalisation": "hand-made",
         "convention": "brats2021"})
    for sub in ("images", "labels", "index", "stats"):
        (root / sub).mkdir(exist_ok=True)
    classes = np.zeros((1, SIZE, SIZE), np.uint8)
    classes[0, SIZE // 2, SIZE // 2] = 2
    mask = np.zeros_like(classes, bool)  # no other centre: every patch is the same one
    for case in ("a", "b"):
        write_case(root, case, _asymmetric()[:, None], classes, mask, 5)
    return root


def _seen(cache: Path, tmp_path: Path, mirror: bool) -> tuple[set[str], set[int]]:
    """Which views of the asymmetric patch (and which labels) 48 patches of the trainer's loader hold."""
    config = TrainConfig(out=tmp_path / f"run{mirror}", epochs=1, batch_size=16, lr=0.01, device="cpu", workers=0,
                         amp=False)
    trainer = BratsTrainer(config, HavaeiOptions(cache, patches_per_epoch=48, mirror=mirror))
    original = torch.from_numpy(_asymmetric())
    views = {"none": original, "H": original.flip(1), "W": original.flip(2), "HW": original.flip(1, 2)}
    seen, labels = set(), set()
    for patches, targets in trainer.train_loader():
        labels |= set(targets.tolist())
        for patch in patches:
            matches = [name for name, view in views.items() if torch.allclose(patch, view, atol=1e-3)]
            assert len(matches) == 1, "every patch is one of the four views of the hand-made patch"
            seen.add(matches[0])
    return seen, labels


def test_mirror_yields_mirrored_copies(cache: Path, tmp_path: Path) -> None:
    seen, labels = _seen(cache, tmp_path, mirror=True)
    assert seen == {"none", "H", "W", "HW"}  # 48 draws: all four views appear (each missing has p < 1e-5)
    assert labels == {2}  # the centre voxel's class, which mirroring does not move


def test_no_mirror_yields_the_patch_as_is(cache: Path, tmp_path: Path) -> None:
    seen, labels = _seen(cache, tmp_path, mirror=False)
    assert seen == {"none"} and labels == {2}


@pytest.mark.parametrize("challenge", ["brats", "lits"])
def test_mirror_option_is_recorded(challenge: str, tmp_path: Path) -> None:
    """``train --no-mirror`` runs and config.json says so; the default is on."""
    runner = CliRunner()
    data, cache = tmp_path / "data", tmp_path / "cache"
    for args in (["sample", "--out", data, "--n-cases", "3", "--size", "32", "--n-slices", "1"],
                 ["tile", "--data", data, "--cache", cache]):
        result = runner.invoke(app, [challenge, *map(str, args)])
        assert result.exit_code == 0, result.output
    extra = ["--transfer", "none"] if challenge == "lits" else []
    for flag, expected in (("--no-mirror", False), ("--mirror", True)):
        run = tmp_path / f"run{flag}"
        result = runner.invoke(app, [challenge, "train", "--cache", str(cache), "--out", str(run), flag, *extra,
                                     "--epochs", "1", "--patches-per-epoch", "8", "--batch-size", "8",
                                     "--device", "cpu", "--workers", "0", "--val-max-cases", "1"])
        assert result.exit_code == 0, result.output
        assert json.loads((run / "config.json").read_text())["options"]["mirror"] is expected
