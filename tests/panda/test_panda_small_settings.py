"""Issue 14's small settings: BatchNorm statistics re-estimated before validation, training on a cleaned
train.csv (--labels), split.json of grouped folds, and U-Net folds pooled by `panda cv` (tiny data, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.engine import TrainConfig
from medchallenge.panda.bnstats import recompute_bn_stats
from medchallenge.panda.labels import mask_scores
from medchallenge.panda.models import MODELS
from medchallenge.panda.train import PandaOptions, PandaTrainer

pytestmark = pytest.mark.slow

TRAIN = ["--model", "resnet18", "--no-pretrained", "--batch-size", "4", "--lr", "1e-3", "--workers", "0",
         "--device", "cpu", "--epochs", "1", "--seed", "0"]
UNET = ["--model", "unet", "--width", "4", "--depth", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
        "--epochs", "1", "--seed", "0"]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


def _error(args: list[str]) -> str:
    """The one ``error:`` line of a command that must exit 2 (no traceback)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 sample slides (9 train), tiled 4×16 px."""
    root = tmp_path_factory.mktemp("panda-small")
    _ok(["panda", "sample", "--out", str(root / "data"), "--n-slides", "12", "--size", "256", "--seed", "0"])
    _ok(["panda", "tile", "--data", str(root / "data"), "--cache", str(root / "tiles"), "--level", "1",
         "--n-tiles", "4", "--tile-size", "16"])
    return root


def test_recompute_bn_stats_is_the_average_over_the_batches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(9.0)  # stale statistics of "earlier weights"
    model.eval()
    batches = [torch.randn(2, 3, 5, 5) + i for i in range(3)]
    seen = recompute_bn_stats(model, batches, lambda net, x: net(x), max_samples=4)
    assert seen == 4 and not model.training  # stopped after 2 batches; the mode it came in
    with torch.no_grad():
        features = [model[0](x) for x in batches[:2]]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3)) for f in features]).mean(0)  # unbiased, as BatchNorm keeps it
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert model[1].momentum == 0.1


@pytest.mark.parametrize("precise", [True, False])
def test_validation_re_estimates_batchnorm_on_the_training_slides(small: Path, tmp_path: Path, precise: bool) -> None:
    trainer = PandaTrainer(TrainConfig(out=tmp_path / "r", device="cpu", batch_size=4, seed=0),
                           PandaOptions(cache=small / "tiles", arch="resnet18", pretrained=False, precise_bn=precise))
    trainer.device = torch.device("cpu")
    model = MODELS.build(trainer.model_spec())
    bn = model.backbone.bn1
    bn.running_mean.fill_(50.0)  # statistics no current weight produces
    model.eval()
    with torch.no_grad():
        trainer.validate(model)
    assert (bn.running_mean.abs() < 50.0).all() if precise else (bn.running_mean == 50.0).all()


def test_train_on_a_cleaned_train_csv(small: Path) -> None:
    train = pd.read_csv(small / "data" / "train.csv", dtype={"image_id": str})
    cleaned = train.iloc[:7].copy()
    cleaned.loc[cleaned.index[0], ["isup_grade", "gleason_score"]] = [5, "5+5"]  # a corrected label
    labels = small / "clean" / "train.csv"
    labels.parent.mkdir()
    cleaned.to_csv(labels, index=False)
    run = small / "cleaned-run"
    _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(run), "--labels", str(labels), *TRAIN])
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(cleaned["image_id"])  # the 2 others are not used
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    expected = cleaned.set_index("image_id")["isup_grade"]
    assert all(oof.loc[i, "isup"] == expected[i] for i in oof.index)  # graded by the file, not the cache
    stranger = cleaned.copy()
    stranger.loc[stranger.index[3], "image_id"] = "0" * 32
    stranger.to_csv(labels, index=False)
    line = _error(["panda", "train", "--cache", str(small / "tiles"), "--out", str(small / "refused"),
                   "--labels", str(labels), *TRAIN])
    assert str(labels) in line and "row 5" in line and "0" * 32 in line and "not in the tile cache" in line
    assert not (small / "refused").exists()


def test_grouped_folds_list_slides_in_split_json(small: Path) -> None:
    ids = sorted(pd.read_csv(small / "data" / "train.csv")["image_id"])
    groups = small / "groups.csv"
    groups.write_text("image_id,group\n" + "".join(f"{i},patient{n % 3}\n" for n, i in enumerate(ids)))
    run = small / "grouped"
    _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(run), "--groups", str(groups),
         "--n-folds", "3", "--fold", "1", *TRAIN])
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ids
    assert len(split["val_groups"]) == 1 and split["val_groups"][0].startswith("patient")
    assert set(split["val"]) == {i for n, i in enumerate(ids) if f"patient{n % 3}" == split["val_groups"][0]}


def test_cv_pools_unet_folds_by_pixels(small: Path) -> None:
    runs = [small / f"unet-fold{k}" for k in range(3)]
    for k, run in enumerate(runs):
        _ok(["panda", "train", "--cache", str(small / "tiles"), "--out", str(run), "--n-folds", "3", "--fold", str(k),
             *UNET])
    oofs = [pd.read_csv(run / "oof.csv", dtype={"id": str}) for run in runs]
    pooled = pd.concat(oofs, ignore_index=True)
    ids = sorted(pd.read_csv(small / "tiles" / "index.csv", dtype={"image_id": str})["image_id"])
    assert sorted(pooled["id"]) == ids  # every slide once (all 9 have masks and tissue)
    for oof, run in zip(oofs, runs):
        assert sorted(oof["id"]) == sorted(json.loads((run / "split.json").read_text())["val"])
    k = 3  # the unified scheme
    matrix = np.array([[pooled[f"px_{t}_{q}"].sum() for q in range(k)] for t in range(k)])
    assert matrix.sum() > 0
    result = json.loads(_ok(["panda", "cv", *map(str, runs), "--out", str(small / "unet-cv"), "--json"]))
    assert result["metric"] == "dice" and result["n"] == len(ids)
    assert result["score"] == pytest.approx(mask_scores(matrix, "unified", "radboud")["mean_dice"])
    mixed = _error(["panda", "cv", str(runs[0]), str(small / "grouped"), "--out", str(small / "mixed")])
    assert "mixed" in mixed or "different splits" in mixed


def test_best_checkpoint_ties_go_to_the_lower_validation_loss(tmp_path: Path) -> None:
    from medchallenge.core.engine.saver import CheckpointSaver

    saver = CheckpointSaver(tmp_path, PandaTrainer.monitor, PandaTrainer.monitor_mode, PandaTrainer.tiebreak)
    rows = [{"qwk": 1.0, "val_loss": 0.9}, {"qwk": 1.0, "val_loss": 0.4}, {"qwk": 1.0, "val_loss": 0.6}]
    assert [saver.improves(row) for row in rows] == [True, True, False]  # 6 validation slides: 1.0 at once
