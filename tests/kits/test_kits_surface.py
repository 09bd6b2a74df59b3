"""KiTS on the shared surface (issue 12): option names, aliases, choices before torch, the slice
cache rule, predict --part/--overwrite, the evaluate report and the model spec round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import load_model, save_checkpoint
from medchallenge.core.cliflags import ENGINE_FLAG_NAMES
from medchallenge.core.engine import TrainConfig
from medchallenge.core.io import write_json
from medchallenge.core.report import COMMON_KEYS
from medchallenge.kits.models import MODELS, unet_spec
from medchallenge.kits.predict import load_kits_model, segment_stack
from medchallenge.kits.sample import write_sample_dataset
from medchallenge.kits.slices import Normalisation

SHARED = {
    "sample": {"--out", "--seed", "--size"},
    "tile": {"--data", "--cache", "--part", "--overwrite", "--workers"},
    "train": {"--cache", "--out", "--model", "--depth", "--width", "--loss"}
    | {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES},
    "predict": {"--checkpoint", "--data", "--out", "--part", "--overwrite", "--batch-size", "--device"},
    "evaluate": {"--truth", "--predictions", "--out", "--json", "--plots"},
}


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits-surface")
    write_sample_dataset(root, n_cases=4, size=32, seed=2)
    return root


@pytest.fixture(scope="module")
def cache(sample: Path) -> Path:
    result = _invoke(["kits", "tile", "--data", str(sample), "--cache", str(sample / "slices")])
    assert result.exit_code == 0, result.output
    return sample / "slices"


@pytest.fixture(scope="module")
def checkpoint(sample: Path) -> Path:
    torch.manual_seed(0)
    net = MODELS.build(unet_spec(depth=2, width=4))
    path = sample / "model.pt"
    save_checkpoint(path, {"challenge": "kits", "model": unet_spec(depth=2, width=4), "state_dict": net.state_dict(),
                           "meta": {"normalisation": {"low": -79.0, "high": 304.0, "mean": 101.0, "std": 76.9}}})
    return path


@pytest.mark.parametrize("verb", sorted(SHARED))
def test_help_lists_the_shared_options(verb: str) -> None:
    command = typer.main.get_command(app).commands["kits"].commands[verb]
    visible = {o for p in command.params if not getattr(p, "hidden", False) for o in p.opts + p.secondary_opts}
    assert SHARED[verb] <= visible, sorted(SHARED[verb] - visible)
    hidden = {o for p in command.params if getattr(p, "hidden", False) for o in p.opts}
    assert "--slices" not in visible and "--tiles" not in visible
    if verb == "train":
        assert "--slices" in hidden  # the old name stays one release, out of --help


def test_engine_defaults_and_aliases_reach_the_trainer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Fake:
        def __init__(self, config: TrainConfig, options: Any) -> None:
            seen.update(config=config, options=options)

        def fit(self) -> dict:
            return {"best": {"composite_dice": 0.5}}

    monkeypatch.setattr("medchallenge.kits.train.KitsTrainer", Fake)
    result = _invoke(["kits", "train", "--slices", str(tmp_path / "c"), "--loss", "ce-dice", "--out",
                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: --slices is deprecated and will be removed; use --cache" in result.output
    assert "warning: --loss ce-dice is deprecated and will be removed; use --loss dice-ce" in result.output
    assert seen["options"].cache == tmp_path / "c" and seen["options"].loss == "dice-ce"
    config = seen["config"]
    assert (config.epochs, config.batch_size, config.lr, config.scheduler, config.workers) == (1, 4, 0.002, "none", 2)
    result = _invoke(["kits", "train", "--slices", "a", "--cache", "b"])
    assert result.exit_code == 2 and "--slices and --cache both given" in result.output


def test_bad_choice_is_rejected_before_torch_is_imported() -> None:
    code = ("import sys\nfrom medchallenge.cli import main\nsys.argv = ['medchallenge', 'kits', 'train', '--loss', 'foo']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "exit 2 False" in done.stdout, done.stdout + done.stderr
    assert "foo" in done.stderr


def test_tile_alias_and_changed_setting(sample: Path, cache: Path) -> None:
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["kind"] == "kits-slices" and meta["settings"] == {"window": [-79.0, 304.0], "mean": 101.0, "std": 76.9}
    result = _invoke(["kits", "tile", "--data", str(sample), "--out", str(cache)])  # the old name of --cache
    assert result.exit_code == 0, result.output
    assert "warning: --out is deprecated and will be removed; use --cache" in result.output
    result = _invoke(["kits", "tile", "--data", str(sample), "--cache", str(cache), "--mean", "90"])
    assert result.exit_code == 2 and "mean: 101.0 → 90.0" in result.output and "--overwrite" in result.output
    assert json.loads((cache / "meta.json").read_text()) == meta  # refused: nothing changed


def test_old_flat_meta_is_refused_then_rebuilt_with_overwrite(sample: Path, tmp_path: Path) -> None:
    old = tmp_path / "slices"
    write_json(old / "meta.json", {"window": [-79.0, 304.0], "mean": 101.0, "std": 76.9})
    for args in (["tile", "--data", str(sample), "--cache", str(old)],
                 ["train", "--cache", str(old), "--out", str(tmp_path / "run"), "--device", "cpu"]):
        result = _invoke(["kits", *args])
        assert result.exit_code == 2, result.output
        assert "older format" in result.output and "kits tile --overwrite" in result.output
        assert len(result.output.strip().splitlines()[-1]) > 20 and "Traceback" not in result.output
    result = _invoke(["kits", "tile", "--data", str(sample), "--cache", str(old), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((old / "meta.json").read_text())["kind"] == "kits-slices"


def test_patch_larger_than_slices_warns(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medchallenge.kits.train import KitsOptions, KitsTrainer

    config = TrainConfig(out=tmp_path / "run", device="cpu", workers=0, scheduler="none")
    KitsTrainer(config, KitsOptions(cache=cache, depth=2, patch_size=64))
    assert "--patch-size 64 is larger than the cached slices (smallest 32×32 px)" in capsys.readouterr().err
    trainer = KitsTrainer(config, KitsOptions(cache=cache, depth=2, width=4, patch_size=32))
    assert "larger than the cached slices" not in capsys.readouterr().err
    # the default build_model builds model_spec() through the KiTS registry
    assert trainer.model_spec() == unet_spec(depth=2, width=4)
    model = trainer.build_model()
    assert (model.depth, sum(p.numel() for p in model.parameters())) == (
        2, sum(p.numel() for p in MODELS.build(unet_spec(depth=2, width=4)).parameters()))


def test_model_round_trips_through_its_spec(checkpoint: Path) -> None:
    torch.manual_seed(0)
    built = MODELS.build(unet_spec(depth=2, width=4)).eval()
    loaded, payload = load_model(checkpoint, MODELS, challenge="kits")
    assert payload["model"] == unet_spec(depth=2, width=4)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(built(x), loaded(x))
    model, norm = load_kits_model(checkpoint, torch.device("cpu"))
    assert norm == Normalisation() and not model.training


def test_segment_stack_pads_any_size_through_core_inference(checkpoint: Path) -> None:
    model, norm = load_kits_model(checkpoint, torch.device("cpu"))
    stack = np.random.default_rng(0).normal(size=(5, 13, 19)).astype(np.float32)
    labels = segment_stack(model, stack, torch.device("cpu"), 2, norm.background)
    x = torch.nn.functional.pad(torch.from_numpy(stack)[:, None], (0, 1, 0, 3), value=norm.background)
    with torch.no_grad():
        expected = model(x)[:, :, :13, :19].argmax(1).numpy()
    assert labels.shape == (5, 13, 19) and labels.dtype == np.uint8 and np.array_equal(labels, expected)


def test_predict_honours_part_and_overwrite(sample: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    base = ["kits", "predict", "--checkpoint", str(checkpoint), "--data", str(sample), "--out", str(out),
            "--device", "cpu"]
    assert _invoke([*base, "--part", "1/2"]).exit_code == 0
    first = sorted(p.name for p in out.glob("prediction_*"))
    assert first == ["prediction_00000.nii.gz", "prediction_00002.nii.gz"]
    assert _invoke([*base, "--part", "2/2"]).exit_code == 0
    assert len(list(out.glob("prediction_*"))) == 4
    target = out / "prediction_00000.nii.gz"
    stamp = target.stat().st_mtime_ns
    assert _invoke(base).exit_code == 0 and target.stat().st_mtime_ns == stamp  # finished: skipped
    assert _invoke([*base, "--overwrite", "--cases", "0"]).exit_code == 0
    assert target.stat().st_mtime_ns != stamp


def test_evaluate_writes_the_common_report(sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    pred = tmp_path / "pred"
    pred.mkdir()
    for n in (0, 1):
        shutil.copy(sample / "data" / f"case_{n:05d}" / "segmentation.nii.gz", pred / f"prediction_{n:05d}.nii.gz")
    monkeypatch.chdir(tmp_path)
    result = _invoke(["kits", "evaluate", "--predictions", str(pred), "--truth", str(sample), "--cases", "0-1",
                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert tuple(report)[:5] == COMMON_KEYS
    assert (report["challenge"], report["score"], report["n"]) == ("kits", 1.0, 2)
    assert report["kidney_dice"] == report["tumor_dice"] == report["composite_dice"] == 1.0
    assert [c["case"] for c in report["cases"]] == ["case_00000", "case_00001"]
    default = tmp_path / "evaluation"  # ./evaluation in the current folder, never beside the predictions
    assert json.loads((default / "metrics.json").read_text()) == report
    assert (default / "cases.csv").read_text().splitlines()[0] == "case,kidney_dice,tumor_dice,composite_dice,pixel_accuracy"
    assert not (pred / "evaluation").exists()
    result = _invoke(["kits", "evaluate", "--predictions", str(pred), "--truth", str(sample), "--cases", "0-1",
                      "--out", str(tmp_path / "ev"), "--plots", "--data", str(sample)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {"metrics.json", "cases.csv", "overlays.png"}
