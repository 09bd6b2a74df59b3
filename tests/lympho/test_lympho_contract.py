"""Lymphocytosis on the shared shape (issue 12): option surface, aliases, choices before torch, the
crops cache rule, predict's folder with --part/--overwrite, the evaluate report, model specs, and
the engine hooks (--batch-size as patients per batch, only the training sampler reseeded)."""

from __future__ import annotations

import json
import math
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
from medchallenge.core.engine import TrainConfig
from medchallenge.lympho.models import KINDS, MODELS
from medchallenge.lympho.train import LymphoOptions, LymphoTrainer

SHARED = {
    "sample": {"--out", "--seed", "--n-patients", "--min-bag", "--max-bag"},
    "tile": {"--data", "--cache", "--crop", "--part", "--overwrite", "--workers"},
    "train": {"--cache", "--out", "--model", "--loss", "--max-batch-images", "--max-images", "--clinical-features"}
    | {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES},
    "predict": {"--checkpoint", "--data", "--out", "--part", "--overwrite", "--batch-size", "--device", "--scores"},
    "evaluate": {"--truth", "--predictions", "--out", "--json", "--plots"},
}
OLD = {"sample": {"--min-images", "--max-images"}, "tile": {"--out"}}


def _ok(args: list[str]) -> CliRunner:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


def _visible(command) -> tuple[set[str], set[str]]:  # type: ignore[no-untyped-def]
    shown, hidden = set(), set()
    for param in command.params:
        for opt in list(getattr(param, "opts", [])) + list(getattr(param, "secondary_opts", [])):
            (hidden if getattr(param, "hidden", False) else shown).add(opt)
    return shown, hidden


@pytest.mark.parametrize("verb", list(SHARED))
def test_every_verb_lists_the_shared_options_and_hides_the_old_names(verb: str) -> None:
    command = typer.main.get_command(app).commands["lympho"].commands[verb]  # type: ignore[attr-defined]
    shown, hidden = _visible(command)
    assert SHARED[verb] <= shown, sorted(SHARED[verb] - shown)
    assert OLD.get(verb, set()) <= hidden
    help_text = CliRunner().invoke(app, ["lympho", verb, "--help"], env={"COLUMNS": "200"}).stdout
    for flag in SHARED[verb]:
        assert flag in help_text, flag


@pytest.mark.parametrize("args", [["train", "--model", "nonsense"], ["train", "--loss", "focal"],
                                  ["train", "--scheduler", "exp"]])
def test_a_bad_choice_is_refused_before_torch_is_imported(args: list[str]) -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom medchallenge.cli import app\n"
            f"r = CliRunner().invoke(app, ['lympho', *{args!r}])\nprint(r.exit_code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"], out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 patients of 2-3 images through the deprecated sample/tile names (which still work, with a warning)."""
    root = tmp_path_factory.mktemp("lympho-contract")
    result = _ok(["lympho", "sample", "--out", str(root), "--n-patients", "16", "--min-images", "2",
                  "--max-images", "3"])
    assert "--min-images is deprecated" in result.stderr and "--max-images is deprecated" in result.stderr
    result = _ok(["lympho", "tile", "--data", str(root), "--out", str(root / "cache"), "--crop", "32"])
    assert "--out is deprecated" in result.stderr and "use --cache" in result.stderr
    sizes = pd.read_csv(root / "cache" / "index.csv")["n_images"]
    assert sizes.between(2, 3).all()  # the old names reached --min-bag/--max-bag
    return root


@pytest.fixture(scope="module")
def checkpoint(dataset: Path) -> Path:
    run = dataset / "run-clinical"
    _ok(["lympho", "train", "--cache", str(dataset / "cache"), "--out", str(run), "--model", "clinical",
         "--no-pretrained", "--epochs", "1", "--device", "cpu", "--workers", "0", "--batch-size", "3"])
    return run / "best.pt"


def test_train_batch_size_is_patients_per_batch(dataset: Path, checkpoint: Path) -> None:
    config = json.loads((checkpoint.parent / "config.json").read_text())
    assert config["batch_size"] == 3 and config["scheduler"] == "none" and config["lr"] == 1e-4
    meta = torch.load(checkpoint, weights_only=True)["meta"]
    n_labelled = int((pd.read_csv(dataset / "cache" / "index.csv")["LABEL"] >= 0).sum())
    n_train = n_labelled - len(meta["val_ids"])
    log = (checkpoint.parent / "train.log").read_text()
    assert f"{math.ceil(n_train / 3)} batches per epoch" in log  # 2-3 images a bag: the 256-image budget never binds


def test_tile_refuses_a_changed_crop_unless_overwrite(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _ok(["lympho", "tile", "--data", str(dataset), "--cache", str(cache), "--crop", "32", "--part", "1/2"])
    first = sorted(p.name for p in (cache / "images").glob("*.npy"))
    assert 0 < len(first) < 16  # part 1 of 2
    result = CliRunner().invoke(app, ["lympho", "tile", "--data", str(dataset), "--cache", str(cache), "--crop", "48"])
    assert result.exit_code == 2 and "crop: 32 → 48" in result.output and "--overwrite" in result.output
    assert len(result.output.strip().splitlines()) == 1
    again = _ok(["lympho", "tile", "--data", str(dataset), "--cache", str(cache), "--crop", "32"])
    assert f"caching {16 - len(first)} patient(s)" in again.stderr  # finished patients skipped
    _ok(["lympho", "tile", "--data", str(dataset), "--cache", str(cache), "--crop", "48", "--overwrite"])
    assert json.loads((cache / "meta.json").read_text())["settings"] == {"crop": 48}
    assert np.load(cache / "images" / f"{first[0]}").shape[-1] == 48


def test_predict_writes_the_folder_honours_part_and_overwrite(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    base = ["lympho", "predict", "--checkpoint", str(checkpoint), "--data", str(dataset), "--device", "cpu", "--scores"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _ok([*base, "--out", str(whole), "--batch-size", "1"])
    expected = pd.read_csv(whole / "submission.csv", dtype={"Id": str})
    _ok([*base, "--out", str(parts), "--part", "1/2"])
    one = pd.read_csv(parts / "submission.part-1-of-2.csv", dtype={"Id": str})
    assert one["Id"].tolist() == expected["Id"].tolist()[0::2] and not (parts / "submission.csv").exists()
    result = CliRunner().invoke(app, ["lympho", "evaluate", "--predictions", str(parts), "--truth",
                                      str(dataset / "answers" / "test_labels.csv"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "part(s) 2/2 not written yet" in result.output
    _ok([*base, "--out", str(parts), "--part", "2/2"])  # completes the set: merged in the CSV's order
    merged = pd.read_csv(parts / "submission.csv", dtype={"Id": str})
    assert merged["Id"].tolist() == expected["Id"].tolist()
    assert merged["Predicted"].tolist() == expected["Predicted"].tolist()
    (parts / "submission.csv").rename(tmp_path / "joined.csv")  # evaluate joins the parts itself, outside them
    _ok(["lympho", "evaluate", "--predictions", str(parts), "--truth", str(dataset / "answers" / "test_labels.csv"),
         "--out", str(tmp_path / "e")])
    joined = pd.read_csv(tmp_path / "e" / "merged_submission.csv", dtype={"Id": str})
    assert sorted(joined["Id"]) == sorted(expected["Id"]) and not (parts / "merged_submission.csv").exists()
    (tmp_path / "joined.csv").rename(parts / "submission.csv")
    np.testing.assert_allclose(merged["Score"], expected["Score"], atol=1e-5)  # --batch-size 8 vs 1: same scores
    stamp = (parts / "submission.part-1-of-2.csv").stat().st_mtime_ns
    again = _ok([*base, "--out", str(parts), "--part", "1/2"])
    assert "skipped" in again.stderr and (parts / "submission.part-1-of-2.csv").stat().st_mtime_ns == stamp
    (parts / "submission.part-1-of-2.csv").write_text("Id,Predicted\n")
    _ok([*base, "--out", str(parts), "--part", "1/2", "--overwrite"])
    assert pd.read_csv(parts / "submission.part-1-of-2.csv", dtype={"Id": str}).equals(one)
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "submission.csv")])
    assert refused.exit_code == 2 and "--out is now a folder" in refused.output


def test_evaluate_writes_the_report_into_out(dataset: Path, checkpoint: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    predictions = tmp_path / "shared" / "predictions"
    _ok(["lympho", "predict", "--checkpoint", str(checkpoint), "--data", str(dataset), "--device", "cpu",
         "--out", str(predictions), "--scores"])
    monkeypatch.chdir(tmp_path)  # the default --out is ./evaluation, here
    truth = dataset / "answers" / "test_labels.csv"
    result = _ok(["lympho", "evaluate", "--truth", str(truth), "--json", "--plots", "--predictions", str(predictions)])
    printed = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert list(printed)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert printed["challenge"] == "lympho" and printed["score"] == printed["balanced_accuracy"]
    saved = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert saved == printed
    cases = pd.read_csv(tmp_path / "evaluation" / "cases.csv", dtype={"Id": str})
    submission = pd.read_csv(predictions / "submission.csv", dtype={"Id": str})
    assert cases["Id"].tolist() == submission["Id"].tolist() and len(cases) == printed["n"]
    answers = pd.read_csv(truth, dtype={"ID": str}).set_index("ID")["LABEL"]
    assert cases["truth"].tolist() == answers.loc[cases["Id"]].tolist()
    assert (cases["correct"] == (cases["truth"] == cases["predicted"])).all() and "score" in cases
    assert (tmp_path / "evaluation" / "confusion_matrix.png").is_file()
    assert not (predictions / "evaluation").exists() and not (predictions.parent / "evaluation").exists()
    assert not (truth.parent / "evaluation").exists()  # never beside the predictions or the truth
    monkeypatch.chdir(predictions)  # a relative folder as --predictions
    _ok(["lympho", "evaluate", "--truth", str(truth), "--predictions", ".", "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "cases.csv").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_round_trips_through_its_spec(kind: str, tmp_path: Path) -> None:
    spec = {"name": kind, "kwargs": {"n_clinical": 3, "arch": "resnet18", "chunk": 2}}
    torch.manual_seed(0)
    model = MODELS.build(spec).eval()
    save_checkpoint(tmp_path / "m.pt", {"challenge": "lympho", "model": spec, "state_dict": model.state_dict(),
                                        "meta": {}})
    loaded, _ = load_model(tmp_path / "m.pt", MODELS, challenge="lympho")
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    bags, clinical = torch.tensor([0, 0, 1, 1, 1]), torch.randn(2, 3)
    with torch.no_grad():
        for key, value in model(images, bags, clinical).items():
            torch.testing.assert_close(loaded(images, bags, clinical)[key], value)


def test_an_old_checkpoint_spec_with_model_kwarg_still_builds() -> None:
    assert MODELS.build({"name": "mean", "kwargs": {"model": "mean", "n_clinical": 2, "arch": "resnet18",
                                                    "chunk": 64}}).kind == "mean"


def test_prepare_model_loads_the_weights_file_into_the_encoder(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    (tmp_path / "cache").mkdir()
    trainer = LymphoTrainer.__new__(LymphoTrainer)  # the hook alone: no cache needed
    trainer.options = LymphoOptions(cache=tmp_path / "cache", model="mean", pretrained=False,
                                    weights=tmp_path / "resnet18.pth")
    model = trainer.build_model()
    trainer.prepare_model(model)
    torch.testing.assert_close(model.encoder.cnn.conv1.weight, source.conv1.weight)
    trainer.options.weights = None  # --no-pretrained and no file: the random initialisation stays
    fresh = trainer.build_model()
    before = fresh.encoder.cnn.conv1.weight.clone()
    trainer.prepare_model(fresh)
    torch.testing.assert_close(fresh.encoder.cnn.conv1.weight, before)


def test_only_the_training_sampler_is_reseeded(dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(out=tmp_path / "run", epochs=4, batch_size=2, device="cpu", workers=0, seed=1)
    trainer = LymphoTrainer(config, LymphoOptions(cache=dataset / "cache", model="clinical", pretrained=False))
    trainer.fit()
    samplers = trainer.loaders._samplers
    assert len(samplers) == 1 and samplers[0].shuffle  # 4 validations added none
    assert len(trainer.loaders._generators) == 1
    assert samplers[0].epoch == 3
