"""PANDA end to end through the CLI: sample → tile → train → predict → evaluate, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app

pytestmark = pytest.mark.slow

TRAIN = ["--model", "resnet18", "--no-pretrained", "--batch-size", "8", "--lr", "1e-3", "--workers", "0",
         "--device", "cpu", "--seed", "0"]


def _ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("panda")
    runner = CliRunner()
    _ok(runner, ["panda", "sample", "--out", str(root / "data"), "--n-slides", "48", "--size", "1024", "--seed", "0"])
    _ok(runner, ["panda", "tile", "--data", str(root / "data"), "--cache", str(root / "tiles"), "--level", "1",
                 "--n-tiles", "16", "--tile-size", "32"])
    return root


def test_pipeline_beats_chance(dataset: Path) -> None:
    runner = CliRunner()
    run = dataset / "run"
    _ok(runner, ["panda", "train", "--cache", str(dataset / "tiles"), "--out", str(run), "--epochs", "8", *TRAIN])
    predictions = dataset / "predictions"
    _ok(runner, ["panda", "predict", "--checkpoint", str(run / "best.pt"), "--data", str(dataset / "data"),
                 "--out", str(predictions), "--device", "cpu"])
    test_ids = pd.read_csv(dataset / "data" / "test.csv")["image_id"].tolist()
    sub = pd.read_csv(predictions / "submission.csv")
    assert sub["image_id"].tolist() == test_ids and sub["isup_grade"].between(0, 5).all()
    out = _ok(runner, ["panda", "evaluate", "--predictions", str(predictions), "--out", str(dataset / "evaluation"),
                       "--truth", str(dataset / "data" / "answers" / "test_labels.csv"), "--json"])
    metrics = json.loads(out)
    assert list(metrics)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert metrics["n"] == len(test_ids) and metrics["score"] == metrics["qwk"]
    assert metrics["qwk"] > 0.5, metrics  # chance is 0
    assert (dataset / "evaluation" / "confusion_matrix.png").is_file()
    cases = pd.read_csv(dataset / "evaluation" / "cases.csv")
    assert sorted(cases["image_id"]) == sorted(test_ids)
    for name in ("config.json", "metrics.csv", "train.log", "last.pt", "best.pt", "plots/loss.png"):
        assert (run / name).is_file()


def test_resume_finishes_the_same_epochs(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medchallenge.panda.train import PandaTrainer

    runner = CliRunner()
    common = ["panda", "train", "--cache", str(dataset / "tiles"), "--epochs", "2", *TRAIN]
    _ok(runner, [*common, "--out", str(dataset / "full")])

    def killed(self: PandaTrainer, epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(PandaTrainer, "on_epoch_end", killed)
        result = runner.invoke(app, [*common, "--out", str(dataset / "part")])
        assert result.exit_code == 130
    assert len(pd.read_csv(dataset / "part" / "metrics.csv")) == 1
    _ok(runner, ["panda", "train", "--resume", str(dataset / "part")])  # the run's own options, none retyped
    full = pd.read_csv(dataset / "full" / "metrics.csv").drop(columns=["time_s", "train_samples_per_s", "data_wait_share"])
    part = pd.read_csv(dataset / "part" / "metrics.csv").drop(columns=["time_s", "train_samples_per_s", "data_wait_share"])
    pd.testing.assert_frame_equal(full, part)


def test_bad_inputs_exit_2(dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = dataset / "data"
    bad = runner.invoke(app, ["panda", "predict", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(data),
                              "--out", str(tmp_path / "s")])
    assert bad.exit_code == 2 and "checkpoint not found" in bad.output
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    bad = runner.invoke(app, ["panda", "predict", "--checkpoint", str(tmp_path / "corrupt.pt"), "--data", str(data),
                              "--out", str(tmp_path / "s")])
    assert bad.exit_code == 2 and "corrupt" in bad.output
    assert not (tmp_path / "s").exists()
    sub = tmp_path / "dup.csv"
    sub.write_text("image_id,isup_grade\nabc,1\nabc,2\n")
    bad = runner.invoke(app, ["panda", "evaluate", "--predictions", str(sub), "--truth", str(data / "train.csv"),
                              "--out", str(tmp_path / "ev")])
    assert bad.exit_code == 2 and "duplicate image_id abc" in bad.output


UNET = ["--model", "unet", "--width", "8", "--depth", "2", "--batch-size", "4", "--lr", "2e-3",
        "--workers", "0", "--device", "cpu", "--seed", "0"]


def test_segmentation_and_mask_guided_classifier(dataset: Path) -> None:
    """sample → tile (with masks) → train unet → predict masks → evaluate masks → train the 4-channel
    classifier on predicted masks → predict with the U-Net → evaluate, through the CLI."""
    runner = CliRunner()
    tiles, data = dataset / "tiles", dataset / "data"
    unet = dataset / "unet"
    _ok(runner, ["panda", "train", "--cache", str(tiles), "--out", str(unet), "--epochs", "6", *UNET])
    masks = dataset / "pred_masks"
    _ok(runner, ["panda", "predict", "--checkpoint", str(unet / "best.pt"), "--cache", str(tiles), "--out", str(masks),
                 "--device", "cpu", "--n-overlays", "2"])
    assert len(list((masks / "overlays").glob("*.png"))) == 2
    seg = json.loads(_ok(runner, ["panda", "evaluate", "--masks", str(masks), "--truth", str(tiles), "--json",
                                  "--out", str(dataset / "ev-masks")]))
    assert seg["score"] == seg["all"]["mean_dice"] and seg["n"] == len(pd.read_csv(dataset / "ev-masks" / "cases.csv"))
    # predicting all background gives tumour Dice 0 wherever there is tumour; the U-Net must do clearly better
    for provider in ("radboud", "karolinska"):
        assert seg["providers"][provider]["tumour_pixels"] > 0
        assert seg["providers"][provider]["tumour_dice"] > 0.5, seg
    assert seg["all"]["pixel_accuracy"] > 0.7, seg

    classifier = dataset / "masked"
    _ok(runner, ["panda", "train", "--cache", str(tiles), "--out", str(classifier), "--epochs", "8",
                 "--mask-model", str(unet / "best.pt"), *TRAIN[:4], "4", *TRAIN[5:]])
    assert (classifier / "masks" / "meta.json").is_file()
    submission = dataset / "masked-predictions"
    _ok(runner, ["panda", "predict", "--checkpoint", str(classifier / "best.pt"), "--data", str(data),
                 "--mask-model", str(unet / "best.pt"), "--out", str(submission), "--device", "cpu"])
    metrics = json.loads(_ok(runner, ["panda", "evaluate", "--predictions", str(submission / "submission.csv"),
                                      "--truth", str(data / "answers" / "test_labels.csv"), "--json",
                                      "--out", str(dataset / "ev-masked")]))
    assert metrics["qwk"] > 0.5, metrics

    # bad inputs: one line naming the file, exit 2, nothing written
    bad = runner.invoke(app, ["panda", "predict", "--checkpoint", str(classifier / "best.pt"), "--data", str(data),
                              "--out", str(dataset / "none"), "--device", "cpu"])
    assert bad.exit_code == 2 and "--mask-model" in bad.output and not (dataset / "none" / "submission.csv").exists()
    per_provider = dataset / "unet-r"
    _ok(runner, ["panda", "train", "--cache", str(tiles), "--out", str(per_provider), "--epochs", "1",
                 "--label-scheme", "provider", "--provider", "radboud", *UNET])
    bad = runner.invoke(app, ["panda", "predict", "--checkpoint", str(classifier / "best.pt"), "--data", str(data),
                              "--mask-model", str(per_provider / "best.pt"), "--out", str(dataset / "none")])
    assert bad.exit_code == 2 and f"{per_provider / 'best.pt'}: a U-Net of the 'provider' label scheme" in bad.output
    small = dataset / "tiles16"
    _ok(runner, ["panda", "tile", "--data", str(data), "--cache", str(small), "--level", "1", "--n-tiles", "16",
                 "--tile-size", "16"])
    bad = runner.invoke(app, ["panda", "evaluate", "--masks", str(masks), "--truth", str(small),
                              "--out", str(dataset / "ev-small")])
    assert bad.exit_code == 2 and "do not match image tiles" in bad.output and str(masks) in bad.output
    bad = runner.invoke(app, ["panda", "train", "--cache", str(small), "--out", str(dataset / "x"), "--masks", str(masks),
                              *TRAIN])
    assert bad.exit_code == 2 and "tile_size=32" in bad.output
    test_tiles = dataset / "tiles_test"
    _ok(runner, ["panda", "tile", "--data", str(data), "--split", "test", "--cache", str(test_tiles), "--level", "1",
                 "--n-tiles", "16", "--tile-size", "32"])
    bad = runner.invoke(app, ["panda", "train", "--cache", str(test_tiles), "--out", str(dataset / "y"), *UNET])
    assert bad.exit_code == 2 and "no slide has mask tiles" in bad.output and not (dataset / "y").exists()
