"""The shared shape of `panda`: option surface, aliases, choices before torch, cache rule, predict
parts/overwrite, evaluate report, model specs, id checks of the cache and mask-folder indexes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import load_model, save_checkpoint
from medchallenge.core.cliflags import ENGINE_FLAG_NAMES
from medchallenge.core.errors import DataError
from medchallenge.panda.models import MODELS

ENGINE = {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES}
SHARED = {
    "sample": {"--out", "--seed"},
    "tile": {"--data", "--cache", "--part", "--overwrite", "--workers"},
    "train": {"--cache", "--out", "--model", "--depth", "--width", "--loss"} | ENGINE,
    "predict": {"--checkpoint", "--data", "--cache", "--out", "--part", "--overwrite", "--merge-parts", "--batch-size",
                "--device"},
    "evaluate": {"--truth", "--predictions", "--out", "--json", "--masks"},
}
OLD = {"tile": {"--out"}, "train": {"--tiles", "--arch", "--unet-depth", "--unet-width", "--seg-loss"},
       "predict": {"--tiles"}}
TEST_IDS = [f"{i:032x}" for i in range(1, 7)]


def _options(command) -> tuple[set[str], set[str]]:  # noqa: ANN001
    shown, hidden = set(), set()
    for param in command.params:
        for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
            (hidden if getattr(param, "hidden", False) else shown).add(opt)
    return shown, hidden


@pytest.mark.parametrize("verb", sorted(SHARED))
def test_help_lists_the_shared_options(verb: str, runner: CliRunner) -> None:
    command = typer.main.get_command(app).commands["panda"].commands[verb]  # type: ignore[attr-defined]
    shown, hidden = _options(command)
    assert SHARED[verb] <= shown, sorted(SHARED[verb] - shown)
    assert OLD.get(verb, set()) <= hidden  # old names still parse, but are not advertised
    result = runner.invoke(app, ["panda", verb, "--help"])
    assert result.exit_code == 0
    if verb == "train":
        for panel in ("Data", "Model", "Optimisation", "Hardware", "Run"):
            assert panel in result.stdout
        assert "efficientnet-b0" in result.stdout and "unet" in result.stdout and "dice-ce" in result.stdout


@pytest.mark.parametrize("args", [["train", "--model", "nonsense"], ["train", "--loss", "foo"],
                                  ["train", "--label-encoding", "x"], ["tile", "--split", "val"]])
def test_a_bad_choice_is_refused_before_torch_is_imported(args: list[str]) -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom medchallenge.cli import app\n"
            f"r = CliRunner().invoke(app, ['panda', *{args!r}])\nprint(r.exit_code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"], out


class _Capture:
    """Stands in for a trainer: records its config and options, trains nothing."""

    seen: list = []

    def __init__(self, config, options) -> None:  # noqa: ANN001
        _Capture.seen.append((config, options))

    def fit(self) -> dict:
        return {"best": {"qwk": 0.0, "dice": 0.0}}


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    from medchallenge.panda import segtrain, train

    _Capture.seen = []
    monkeypatch.setattr(train, "PandaTrainer", _Capture)
    monkeypatch.setattr(segtrain, "PandaSegTrainer", _Capture)
    return _Capture.seen


def test_deprecated_aliases_still_work_and_say_so(tmp_path: Path, captured: list, runner: CliRunner) -> None:
    result = runner.invoke(app, ["panda", "train", "--tiles", str(tmp_path), "--arch", "resnet18", "--out",
                                 str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "--tiles is deprecated" in result.stderr and "use --cache" in result.stderr
    assert "--arch is deprecated" in result.stderr
    config, options = captured[-1]
    assert options.cache == tmp_path and options.arch == "resnet18"
    assert (config.epochs, config.batch_size, config.lr, config.warmup_epochs) == (20, 2, 3e-4, 1.0)
    result = runner.invoke(app, ["panda", "train", "--model", "unet", "--unet-depth", "2", "--unet-width", "8",
                                 "--seg-loss", "ce", "--cache", str(tmp_path), "--out", str(tmp_path / "u")])
    assert result.exit_code == 0, result.output
    assert "--unet-depth is deprecated" in result.stderr and "--seg-loss is deprecated" in result.stderr
    _, seg = captured[-1]
    assert (seg.depth, seg.width, seg.loss, seg.scheme) == (2, 8, "ce", "unified")


def test_loss_is_refused_for_a_classifier(tmp_path: Path, captured: list, runner: CliRunner) -> None:
    result = runner.invoke(app, ["panda", "train", "--cache", str(tmp_path), "--loss", "dice", "--model", "resnet18"])
    assert result.exit_code == 2 and "--loss is the U-Net's loss" in result.output and not captured
    assert len(result.output.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampled dataset with its test split tiled (4 tiles of 16 px)."""
    root = tmp_path_factory.mktemp("panda-cli")
    runner = CliRunner()
    for args in (["sample", "--out", str(root / "data"), "--n-slides", "8", "--size", "256"],
                 ["tile", "--data", str(root / "data"), "--split", "test", "--n-tiles", "4", "--tile-size", "16"]):
        result = runner.invoke(app, ["panda", *args])
        assert result.exit_code == 0, result.output
    return root


def test_changed_cache_setting_is_refused_naming_it(small: Path, runner: CliRunner) -> None:
    data = small / "data"
    again = runner.invoke(app, ["panda", "tile", "--data", str(data), "--split", "test", "--n-tiles", "4",
                                "--tile-size", "16"])
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, ["panda", "tile", "--data", str(data), "--split", "test", "--n-tiles", "5",
                                "--tile-size", "16", "--cache", str(data / "tiles_test")])
    assert other.exit_code == 2 and "n_tiles: 4 → 5" in other.output and "--overwrite" in other.output
    meta = json.loads((data / "tiles_test" / "meta.json").read_text())
    assert meta["kind"] == "panda-tiles" and meta["settings"]["n_tiles"] == 4 and meta["info"]["level_option"] == 1


def _classifier_checkpoint(path: Path, tiling: dict) -> Path:
    torch.manual_seed(0)
    spec = {"name": "classifier", "kwargs": {"arch": "resnet18", "encoding": "ordinal", "layout": "mosaic",
                                             "in_channels": 3, "grad_checkpoint": False}}
    model = MODELS.build(spec)
    save_checkpoint(path, {"challenge": "panda", "model": spec, "state_dict": model.state_dict(),
                           "meta": {"tiling": tiling, "mask": None}})
    return path


def test_predict_parts_overwrite_and_merge(small: Path, tmp_path: Path, runner: CliRunner) -> None:
    data, cache = small / "data", small / "data" / "tiles_test"
    meta = json.loads((cache / "meta.json").read_text())["settings"]
    ckpt = _classifier_checkpoint(tmp_path / "c.pt", meta)
    out = tmp_path / "pred"
    common = ["panda", "predict", "--checkpoint", str(ckpt), "--data", str(data), "--cache", str(cache),
              "--out", str(out), "--device", "cpu"]
    ids = pd.read_csv(data / "test.csv", dtype={"image_id": str})["image_id"].tolist()
    assert runner.invoke(app, [*common, "--part", "1/2"]).exit_code == 0
    first = out / "submission.part-1-of-2.csv"
    assert pd.read_csv(first, dtype={"image_id": str})["image_id"].tolist() == ids[0::2]
    assert not (out / "submission.csv").exists()
    merge = runner.invoke(app, ["panda", "predict", "--merge-parts", "--out", str(out)])
    assert merge.exit_code == 2 and "2/2 not written yet" in merge.output
    stamp = first.stat().st_mtime_ns
    rerun = runner.invoke(app, [*common, "--part", "1/2"])
    assert rerun.exit_code == 0 and first.stat().st_mtime_ns == stamp and "--overwrite" in rerun.output
    assert runner.invoke(app, [*common, "--part", "1/2", "--overwrite"]).exit_code == 0
    assert first.stat().st_mtime_ns != stamp
    last = runner.invoke(app, [*common, "--part", "2/2"])
    assert last.exit_code == 0 and "merged into" in last.output  # the last part joins all of them
    merged = pd.read_csv(out / "submission.csv", dtype={"image_id": str})
    assert merged["image_id"].tolist() == ids[0::2] + ids[1::2]
    (out / "submission.csv").unlink()
    truth = data / "answers" / "test_labels.csv"
    from_parts = runner.invoke(app, ["panda", "evaluate", "--predictions", str(out), "--truth", str(truth), "--json",
                                     "--out", str(tmp_path / "ev-parts")])
    assert from_parts.exit_code == 0, from_parts.output
    assert json.loads(from_parts.stdout)["n"] == len(ids) and not (out / "submission.csv").exists()
    assert runner.invoke(app, ["panda", "predict", "--merge-parts", "--out", str(out)]).exit_code == 0
    merged = pd.read_csv(out / "submission.csv", dtype={"image_id": str})
    assert sorted(merged["image_id"]) == sorted(ids)
    whole = runner.invoke(app, [*common])
    assert whole.exit_code == 0 and "kept" in whole.output  # the merged file is a finished output


def test_evaluate_writes_the_report_into_out(tmp_path: Path, runner: CliRunner) -> None:
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"image_id": TEST_IDS, "isup_grade": [0, 1, 2, 3, 4, 5],
                  "data_provider": ["radboud", "karolinska"] * 3}).to_csv(truth, index=False)
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"image_id": TEST_IDS, "isup_grade": [0, 1, 2, 3, 5, 5]}).to_csv(sub, index=False)
    out = tmp_path / "ev"
    result = runner.invoke(app, ["panda", "evaluate", "--predictions", str(sub), "--truth", str(truth), "--json",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert list(printed)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert printed["challenge"] == "panda" and printed["score"] == printed["qwk"] and printed["n"] == 6
    assert json.loads((out / "metrics.json").read_text()) == printed
    cases = pd.read_csv(out / "cases.csv", dtype={"image_id": str})
    assert cases["image_id"].tolist() == TEST_IDS and cases["isup_grade_pred"].tolist()[4] == 5
    assert (out / "confusion_matrix.png").is_file()
    assert not (tmp_path / "evaluation").exists()


@pytest.mark.parametrize("spec", [
    {"name": "classifier", "kwargs": {"arch": "resnet18", "encoding": "ordinal", "layout": "mosaic",
                                      "in_channels": 3, "grad_checkpoint": False}},
    {"name": "classifier", "kwargs": {"arch": "resnet18", "encoding": "tile-vote", "layout": "mosaic",
                                      "in_channels": 4, "grad_checkpoint": True}},
    {"name": "unet", "kwargs": {"num_classes": 3, "depth": 2, "width": 4}},
])
def test_every_model_round_trips_through_its_spec(spec: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MODELS.build(spec).eval()
    save_checkpoint(tmp_path / "m.pt", {"challenge": "panda", "model": spec, "state_dict": model.state_dict(),
                                        "meta": {}})
    loaded, state = load_model(tmp_path / "m.pt", MODELS, challenge="panda")
    channels = spec["kwargs"].get("in_channels", 3)
    x = torch.randint(0, 255, (1, 4, channels, 16, 16), dtype=torch.uint8)
    x = x[:, 0, :3] if spec["name"] == "unet" else x
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert state["model"] == spec and sorted(MODELS.names()) == ["classifier", "unet"]


def test_prepare_model_loads_imagenet_weights(tmp_path: Path) -> None:
    """Pretrained weights reach the backbone through the trainer hook, not through the spec."""
    from medchallenge.core.backbones import create_classifier
    from medchallenge.panda.models import load_pretrained

    torch.manual_seed(1)
    file = tmp_path / "resnet18.pth"
    imagenet = create_classifier("resnet18", 1000, pretrained=False).state_dict()
    torch.save(imagenet, file)
    model = MODELS.build({"name": "classifier", "kwargs": {"arch": "resnet18", "in_channels": 4}})
    assert not torch.equal(model.backbone.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])
    load_pretrained(model, "resnet18", file)
    torch.testing.assert_close(model.backbone.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])
    torch.testing.assert_close(model.backbone.conv1.weight[:, :3], imagenet["conv1.weight"])
    # the trainer's hook does it (and only when asked: --no-pretrained keeps the random weights)
    from types import SimpleNamespace

    from medchallenge.panda.train import PandaOptions, PandaTrainer

    fresh = MODELS.build({"name": "classifier", "kwargs": {"arch": "resnet18"}})
    before = fresh.backbone.layer1[0].conv1.weight.clone()
    PandaTrainer.prepare_model(SimpleNamespace(options=PandaOptions(cache=tmp_path, arch="resnet18",
                                                                     pretrained=False)), fresh)
    torch.testing.assert_close(fresh.backbone.layer1[0].conv1.weight, before)
    PandaTrainer.prepare_model(SimpleNamespace(options=PandaOptions(cache=tmp_path, arch="resnet18", weights=file)),
                               fresh)
    torch.testing.assert_close(fresh.backbone.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])


def test_cache_and_mask_folder_indexes_refuse_bad_ids(small: Path, tmp_path: Path) -> None:
    import shutil

    from medchallenge.panda.masks import MaskFolder
    from medchallenge.panda.tiles import TileCache

    cache = tmp_path / "cache"
    shutil.copytree(small / "data" / "tiles_test", cache)
    index = pd.read_csv(cache / "index.csv", dtype={"image_id": str})
    index.loc[0, "image_id"] = "../../evil"
    index.to_csv(cache / "index.csv", index=False)
    with pytest.raises(DataError, match="image_id"):
        TileCache(cache)
    folder = tmp_path / "masks"
    (folder / "masks").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"scheme": "unified", "tile_size": 16, "n_tiles": 4, "level": 1}))
    pd.DataFrame({"image_id": ["../x"], "data_provider": ["radboud"]}).to_csv(folder / "index.csv", index=False)
    with pytest.raises(DataError, match="image_id"):
        MaskFolder(folder)
    np.savez(folder / "masks" / f"{TEST_IDS[0]}.npz", masks=np.zeros((4, 16, 16), np.uint8))
    pd.DataFrame({"image_id": [TEST_IDS[0]], "data_provider": ["radboud"]}).to_csv(folder / "index.csv", index=False)
    assert MaskFolder(folder).ids() == {TEST_IDS[0]}
