"""MIDOG on the shared shape (issue 12): option surface, aliases, cache rule, predict parts, report, specs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.cliflags import ENGINE_FLAG_NAMES

SHARED = {
    "sample": {"--out", "--seed", "--size"},
    "tile": {"--data", "--cache", "--part", "--overwrite", "--workers", "--tiff-tile"},
    "train": {"--data", "--cache", "--out", "--model"} | {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES},
    "predict": {"--checkpoint", "--data", "--out", "--part", "--overwrite", "--batch-size", "--device", "--cases"},
    "evaluate": {"--truth", "--predictions", "--out", "--json", "--plots", "--cases"},
}
OLD = {"sample": {"--width", "--height"}, "tile": {"--tile-size"}, "train": {"--backbone"}, "predict": {"--ids"},
       "evaluate": {"--detections", "--ids"}}


def strict_loads(text: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def visible_options(verb: str) -> set[str]:
    command = typer.main.get_command(app).commands["midog"].commands[verb]  # type: ignore[attr-defined]
    return {opt for p in command.params if not getattr(p, "hidden", False)
            for opt in list(p.opts) + list(p.secondary_opts) if opt.startswith("--")}


@pytest.mark.parametrize("verb", sorted(SHARED))
def test_every_verb_lists_the_shared_options_and_hides_the_old_names(verb: str) -> None:
    options = visible_options(verb)
    assert SHARED[verb] <= options, sorted(SHARED[verb] - options)
    assert not OLD[verb] & options
    code, out = run(["midog", verb, "--help"])
    assert code == 0 and all(name in out for name in SHARED[verb])


@pytest.mark.parametrize("args", [
    ["train", "--model", "resnet101"], ["train", "--imposters", "maybe"], ["train", "--optimizer", "nonsense"],
    ["predict", "--checkpoint", "x.pt", "--format", "csv"],
])
def test_a_bad_choice_is_refused_before_torch_is_imported(args: list[str]) -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom medchallenge.cli import app\n"
            f"r = CliRunner().invoke(app, ['midog', *{args!r}])\nprint(r.exit_code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"], out


def test_train_takes_the_engine_flags_with_midog_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import medchallenge.midog.train as train

    seen = {}

    class Recorder:
        def __init__(self, config, options) -> None:  # noqa: ANN001
            seen.update(config=config, options=options)

        def fit(self) -> dict:
            return {"best": {"f1": 0.0}}

    monkeypatch.setattr(train, "MidogTrainer", Recorder)
    code, out = run(["midog", "train", "--backbone", "resnet18", "--cache", "tiles", "--out", str(tmp_path / "r")])
    assert code == 0, out
    assert "--backbone is deprecated" in out and "use --model" in out
    config, options = seen["config"], seen["options"]
    assert config.grad_clip == 10.0 and config.batch_size == 12 and config.lr == 1e-4 and config.epochs == 10
    assert options.model == "resnet18" and options.cache == Path("tiles") and options.images == Path("tiles")
    code, _ = run(["midog", "train", "--grad-clip", "1", "--channels-last", "--out", str(tmp_path / "s")])
    assert code == 0 and seen["config"].grad_clip == 1.0 and seen["config"].channels_last


def test_sample_size_sets_width_and_three_quarters_height(tmp_path: Path) -> None:
    code, out = run(["midog", "sample", "--out", str(tmp_path / "a"), "--n-images", "3", "--size", "128"])
    assert code == 0, out
    images = json.loads((tmp_path / "a" / "MIDOG.json").read_text())["images"]
    assert {(i["width"], i["height"]) for i in images} == {(128, 96)}
    code, out = run(["midog", "sample", "--out", str(tmp_path / "b"), "--n-images", "3", "--width", "128",
                     "--height", "80"])
    assert code == 0 and "--width is deprecated" in out and "--height is deprecated" in out
    images = json.loads((tmp_path / "b" / "MIDOG.json").read_text())["images"]
    assert {(i["width"], i["height"]) for i in images} == {(128, 80)}


def _images(folder: Path, n: int = 3) -> Path:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        tifffile.imwrite(folder / f"{i:03d}.tiff", np.full((40, 50, 3), 10 * i, np.uint8), photometric="rgb")
    return folder


def test_tile_cache_refuses_changed_settings_unless_overwrite(tmp_path: Path) -> None:
    from medchallenge.core.wsi import open_slide

    data, cache = _images(tmp_path / "data"), tmp_path / "tiles"
    assert run(["midog", "tile", "--data", str(data), "--cache", str(cache), "--tiff-tile", "32"])[0] == 0
    assert json.loads((cache / "meta.json").read_text())["kind"] == "midog-tiff"
    code, out = run(["midog", "tile", "--data", str(data), "--cache", str(cache), "--tiff-tile", "16"])
    assert code == 2 and "tiff_tile: 32 → 16" in out and "--overwrite" in out and len(out.strip().splitlines()) == 1
    code, out = run(["midog", "tile", "--data", str(data), "--out", str(cache), "--tile-size", "16", "--overwrite"])
    assert code == 0 and "--tile-size is deprecated" in out and "--out is deprecated" in out
    with open_slide(cache / "001.tiff") as reader:
        assert reader.tiled
    import tifffile

    with tifffile.TiffFile(cache / "002.tiff") as tif:
        assert tif.pages[0].tilewidth == 16  # rebuilt with the new setting, not kept from the old run
    # train reads only a folder that `tile` made
    code, out = run(["midog", "train", "--cache", str(data), "--out", str(tmp_path / "r"), "--model", "resnet18",
                     "--no-pretrained"])
    assert code == 2 and "not a midog-tiff cache" in out


def test_tile_skips_finished_images_and_honours_part(tmp_path: Path) -> None:
    data, cache = _images(tmp_path / "data", 4), tmp_path / "tiles"
    assert run(["midog", "tile", "--data", str(data), "--cache", str(cache), "--part", "2/2"])[0] == 0
    assert sorted(p.name for p in cache.glob("*.tiff")) == ["002.tiff", "004.tiff"]
    before = (cache / "002.tiff").stat().st_mtime_ns
    assert run(["midog", "tile", "--data", str(data), "--cache", str(cache)])[0] == 0
    assert len(list(cache.glob("*.tiff"))) == 4 and (cache / "002.tiff").stat().st_mtime_ns == before


def _checkpoint(path: Path) -> Path:
    from medchallenge.core.checkpoint import save_checkpoint
    from medchallenge.midog.models import MODELS

    spec = {"name": "retinanet", "kwargs": {"backbone": "resnet18", "num_classes": 2, "patch_size": 64,
                                            "trainable_layers": 5}}
    save_checkpoint(path, {"challenge": "midog", "model": spec, "state_dict": MODELS.build(spec).state_dict(),
                           "meta": {"threshold": 0.5, "patch_size": 64, "overlap": 0.1}})
    return path


def test_predict_writes_a_folder_honours_part_and_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medchallenge.midog.predict as predict

    seen: list[str] = []

    def fake(model, reader, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        seen.append(Path(reader.path).name)
        return np.array([[10.0, 12.0]]), np.array([0.9])

    monkeypatch.setattr(predict, "detect_image", fake)
    data, ckpt, out = _images(tmp_path / "data", 5), _checkpoint(tmp_path / "m.pt"), tmp_path / "pred"
    base = ["midog", "predict", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--device", "cpu",
            "--spacing", "0.25"]
    assert run(base + ["--part", "2/2"])[0] == 0
    assert seen == ["002.tiff", "004.tiff"]
    assert sorted(json.loads((out / "detections.part-2-of-2.json").read_text())) == ["002.tiff", "004.tiff"]
    assert sorted(json.loads((out / "grand-challenge.part-2-of-2.json").read_text())) == ["002.tiff", "004.tiff"]
    code, out_text = run(base + ["--part", "2/2"])
    assert code == 0 and seen == ["002.tiff", "004.tiff"] and "skipped" in out_text  # finished: not redone
    assert run(base + ["--part", "2/2", "--overwrite"])[0] == 0 and len(seen) == 4
    assert run(base + ["--part", "1/2", "--ids", "1-4"])[0] == 0 and seen[4:] == ["001.tiff", "003.tiff"]
    assert not (out / "detections.json").exists()  # parts of two image lists are not one prediction
    code, out_text = run(base + ["--part", "1/2"])
    assert code == 0 and "merged into" in out_text  # the last part of the set joins them
    for stem in ("detections", "grand-challenge"):
        assert sorted(json.loads((out / f"{stem}.json").read_text())) == [f"{i:03d}.tiff" for i in range(1, 6)]
    assert run(base)[0] == 0 and len(json.loads((out / "detections.json").read_text())) == 5


def _truth(path: Path) -> Path:
    path.write_text(json.dumps({
        "images": [{"file_name": f"{i:03d}.tiff", "id": i, "width": 50, "height": 40} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "mitotic figure"}],
        "annotations": [{"bbox": [-15.0, -13.0, 35.0, 37.0], "category_id": 1, "image_id": i, "id": i} for i in (1, 2, 3)]}))
    return path


def test_evaluate_merges_parts_and_writes_the_report_into_out(tmp_path: Path) -> None:
    pred = tmp_path / "shared" / "pred"
    pred.mkdir(parents=True)
    (pred / "detections.part-1-of-2.json").write_text(json.dumps({"001.tiff": [{"x": 10, "y": 12, "score": 0.9}],
                                                                   "003.tiff": []}))
    (pred / "detections.part-2-of-2.json").write_text(json.dumps({"002.tiff": [{"x": 90, "y": 12, "score": 0.9}]}))
    truth = _truth(tmp_path / "MIDOG.json")
    code, out = run(["midog", "evaluate", "--predictions", str(pred), "--truth", str(truth), "--json",
                     "--out", str(tmp_path / "ev")])
    assert code == 0, out
    got = strict_loads(out)
    assert list(got)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert got["challenge"] == "midog" and got["n"] == 3 and (got["tp"], got["fp"], got["fn"]) == (1, 1, 2)
    assert got["score"] == got["f1"] == pytest.approx(2 / 5)
    assert strict_loads((tmp_path / "ev" / "metrics.json").read_text()) == got
    import pandas as pd

    cases = pd.read_csv(tmp_path / "ev" / "cases.csv")
    assert list(cases["image"]) == ["001.tiff", "003.tiff", "002.tiff"] and list(cases["tp"]) == [1, 0, 0]
    assert sorted(p.name for p in pred.iterdir()) == ["detections.part-1-of-2.json", "detections.part-2-of-2.json"]
    # default --out: ./evaluation in the current folder (the tests run in tmp_path)
    code, out = run(["midog", "evaluate", "--detections", str(pred / "detections.part-1-of-2.json"), "--truth",
                     str(truth), "--ids", "2"])
    assert code == 0 and "--detections is deprecated" in out and "--ids is deprecated" in out
    assert strict_loads((tmp_path / "evaluation" / "metrics.json").read_text())["n"] == 3
    # a missing part is named, one line
    (pred / "detections.part-2-of-2.json").rename(pred / "held-back.json")
    code, out = run(["midog", "evaluate", "--predictions", str(pred), "--truth", str(truth)])
    assert code == 2 and "part(s) 2/2 not written yet" in out
    (pred / "held-back.json").rename(pred / "detections.part-2-of-2.json")
    # a part file of another --part N is stale: refused, one line
    (pred / "detections.part-1-of-3.json").write_text("{}")
    code, out = run(["midog", "evaluate", "--predictions", str(pred), "--truth", str(truth)])
    assert code == 2 and "different --part N" in out


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_model_round_trips_through_its_spec(tmp_path: Path, backbone: str) -> None:
    from medchallenge.core.checkpoint import load_model, save_checkpoint
    from medchallenge.midog.models import MODELS

    spec = {"name": "retinanet", "kwargs": {"backbone": backbone, "num_classes": 3, "patch_size": 64,
                                            "trainable_layers": 3}}
    torch.manual_seed(0)
    model = MODELS.build(spec).eval()
    save_checkpoint(tmp_path / "m.pt", {"challenge": "midog", "model": spec, "state_dict": model.state_dict()})
    loaded, _ = load_model(tmp_path / "m.pt", MODELS, challenge="midog", models=["retinanet"])
    image = [torch.rand(3, 64, 64)]
    model.score_thresh = loaded.score_thresh = 0.0  # random heads score below 0.05: keep every candidate
    with torch.no_grad():
        (a,), (b,) = model(image), loaded(image)
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_prepare_model_loads_coco_backbone_and_freezes(tmp_path: Path) -> None:
    from torchvision.models.detection import retinanet_resnet50_fpn_v2

    from medchallenge.core.engine import TrainConfig
    from medchallenge.midog.models import MODELS
    from medchallenge.midog.train import MidogOptions, MidogTrainer

    torch.manual_seed(1)
    coco = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    torch.save(coco.state_dict(), tmp_path / "coco.pth")
    trainer = MidogTrainer.__new__(MidogTrainer)  # the hooks only, no data
    trainer.options = MidogOptions(data=tmp_path, model="resnet50", trainable_layers=2, weights=tmp_path / "coco.pth")
    trainer.config = TrainConfig(out=tmp_path / "run")
    model = MODELS.build(trainer.model_spec())
    trainer.prepare_model(model)
    for key, value in coco.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=0, atol=0)
    grads = {name.split(".")[0]: p.requires_grad for name, p in model.backbone.body.named_parameters()}
    assert grads == {"conv1": False, "bn1": False, "layer1": False, "layer2": False, "layer3": True, "layer4": True}
    assert all(p.requires_grad for p in model.head.parameters())


def test_training_step_runs_in_channels_last(tmp_path: Path) -> None:
    from medchallenge.core.engine import TrainConfig
    from medchallenge.midog.models import MODELS
    from medchallenge.midog.train import MidogOptions, MidogTrainer

    trainer = MidogTrainer.__new__(MidogTrainer)
    trainer.options = MidogOptions(data=tmp_path, model="resnet18", patch_size=64, pretrained=False)
    trainer.config = TrainConfig(out=tmp_path / "run", channels_last=True)
    trainer.device = torch.device("cpu")
    model = MODELS.build(trainer.model_spec()).to(memory_format=torch.channels_last).train()
    batch = trainer.to_device(([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]),
                                                          "labels": torch.tensor([1])}]))
    loss = trainer.training_step(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
