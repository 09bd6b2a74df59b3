"""The contract every challenge fulfils (docs/architecture.md), checked for all six at once.

timm's test_models.py pattern: one parametrised test per rule, so a seventh challenge is held to
the same contract by adding its key to CHALLENGES.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from medchallenge.cli import app
from medchallenge.core.cliflags import ENGINE_FLAG_NAMES

CHALLENGES = ["panda", "kits", "brats", "lits", "midog", "lympho"]
VERBS = ["sample", "tile", "train", "predict", "evaluate", "check", "cv"]
PACKAGE = Path(__file__).resolve().parents[1] / "medchallenge"

SHARED = {
    "sample": {"--out", "--seed"},
    "tile": {"--data", "--cache", "--part", "--overwrite", "--workers"},
    "train": {"--cache", "--out", "--model"} | {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES},
    "predict": {"--checkpoint", "--data", "--out", "--part", "--overwrite", "--batch-size", "--device", "--tta"},
    "evaluate": {"--truth", "--predictions", "--out", "--json"},
    "check": {"--data", "--json", "--workers"},
    "cv": {"--out", "--json"},
}
THRESHOLDED = ["panda", "midog", "lympho"]  # a decision tuned on validation: predict --threshold auto


def _commands() -> dict:
    root = typer.main.get_command(app)
    return {name: group.commands for name, group in root.commands.items() if hasattr(group, "commands")}


def _options(command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
            if opt.startswith("--") and not getattr(param, "hidden", False):
                names.add(opt)
    return names


@pytest.mark.parametrize("challenge", CHALLENGES)
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_the_shared_options(challenge: str, verb: str) -> None:
    commands = _commands()[challenge]
    assert verb in commands, f"{challenge} has no `{verb}`"
    options = _options(commands[verb])
    missing = SHARED[verb] - options
    assert not missing, f"{challenge} {verb} lacks {sorted(missing)}"


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_every_challenge_lists_its_verbs_in_pipeline_order(challenge: str) -> None:
    names = list(_commands()[challenge])
    assert names[: len(VERBS)] == ["sample", "check", "tile", "train", "predict", "evaluate", "cv"], names


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_every_predict_ensembles_and_every_train_folds(challenge: str) -> None:
    commands = _commands()[challenge]
    checkpoint = next(p for p in commands["predict"].params if "--checkpoint" in getattr(p, "opts", []))
    assert checkpoint.multiple, f"{challenge} predict takes one --checkpoint: no ensembles"
    resume = next(p for p in commands["train"].params if "--resume" in getattr(p, "opts", []))
    assert not getattr(resume, "is_flag", False), f"{challenge} train --resume takes no RUN"
    if challenge in THRESHOLDED:
        threshold = next(p for p in commands["predict"].params if "--threshold" in getattr(p, "opts", []))
        assert threshold.default == "auto", f"{challenge} predict --threshold defaults to {threshold.default}"


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_challenges_import_no_other_challenge(challenge: str) -> None:
    others = [c for c in CHALLENGES if c != challenge]
    for path in (PACKAGE / challenge).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                assert not (len(parts) > 1 and parts[0] == "medchallenge" and parts[1] in others), (
                    f"{path.relative_to(PACKAGE)} imports {name}")


def test_core_imports_no_challenge() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        text = path.read_text()
        for challenge in CHALLENGES:
            assert f"medchallenge.{challenge}" not in text, f"core/{path.name} imports {challenge}"


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_a_bad_choice_is_refused_before_torch_is_imported(challenge: str) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from medchallenge.cli import app\n"
        f"r = CliRunner().invoke(app, ['{challenge}', 'train', '--optimizer', 'nonsense'])\n"
        "print(r.exit_code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"], out


# ---------------------------------------------------------------- behaviour on sample data
import json  # noqa: E402
import shutil  # noqa: E402

import pandas as pd  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

SAMPLE_ARGS = {
    "panda": ["--n-slides", "8", "--size", "512"],
    "kits": ["--n-cases", "3", "--size", "32"],
    "brats": ["--n-cases", "3", "--size", "32", "--n-slices", "4"],
    "lits": ["--n-cases", "3", "--size", "32", "--n-slices", "4"],
    "midog": ["--n-images", "3", "--size", "256"],
    "lympho": ["--n-patients", "8"],
}
# a tile setting and two values: the second run must be refused naming the setting
TILE_SETTING = {
    "panda": ("--tile-size", "32", "64", ["--n-tiles", "4", "--level", "0"]),
    "kits": ("--window", "-79,304", "-100,300", []),
    "midog": ("--tiff-tile", "128", "256", []),
    "lympho": ("--crop", "64", "96", []),
}


def _invoke(*args: str) -> object:
    result = CliRunner().invoke(app, list(args))
    return result


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("samples")
    made = {}
    for challenge, args in SAMPLE_ARGS.items():
        result = _invoke(challenge, "sample", "--out", str(root / challenge), "--seed", "0", *args)
        assert result.exit_code == 0, f"{challenge} sample: {result.output}"
        made[challenge] = root / challenge
    return made


def _perfect_predictions(challenge: str, data: Path, out: Path) -> tuple[Path, Path]:
    """(predictions, truth) where the predictions are the answer key in the submission format."""
    answers = data / "answers"
    out.mkdir(parents=True)
    if challenge in ("panda", "lympho"):
        truth = answers / "test_labels.csv"
        frame = pd.read_csv(truth)
        if challenge == "panda":
            frame[["image_id", "isup_grade"]].to_csv(out / "submission.csv", index=False)
        else:
            frame.rename(columns={"ID": "Id", "LABEL": "Predicted"})[["Id", "Predicted"]].to_csv(
                out / "submission.csv", index=False)
        return out / "submission.csv", truth
    if challenge == "kits":
        for case in sorted(answers.iterdir()):
            shutil.copy(case / "segmentation.nii.gz", out / f"prediction_{case.name[5:]}.nii.gz")
    elif challenge == "brats":
        for case in sorted(answers.iterdir()):
            shutil.copy(case / f"{case.name}_seg.nii.gz", out / f"{case.name}.nii.gz")
    elif challenge == "lits":
        for file in sorted(answers.iterdir()):
            shutil.copy(file, out / file.name)
    elif challenge == "midog":
        truth = json.loads((answers / "MIDOG.json").read_text())
        names = {img["id"]: img["file_name"] for img in truth["images"]}
        points: dict[str, list] = {name: [] for name in names.values()}
        for ann in truth["annotations"]:
            if ann["category_id"] == 1:
                x1, y1, x2, y2 = ann["bbox"]
                points[names[ann["image_id"]]].append({"x": (x1 + x2) / 2, "y": (y1 + y2) / 2, "score": 1.0})
        (out / "detections.json").write_text(json.dumps(points))
        return out / "detections.json", answers / "MIDOG.json"
    return out, answers


@pytest.mark.slow
@pytest.mark.parametrize("challenge", CHALLENGES)
def test_every_evaluate_writes_the_common_report(challenge: str, samples: dict[str, Path], tmp_path: Path) -> None:
    predictions, truth = _perfect_predictions(challenge, samples[challenge], tmp_path / "pred")
    out = tmp_path / "report"
    args = [challenge, "evaluate", "--predictions", str(predictions), "--truth", str(truth), "--out", str(out)]
    if challenge == "midog":
        args += ["--data", str(samples[challenge])]
    result = _invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    strict = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert list(strict)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert strict["challenge"] == challenge and strict["n"] >= 1
    assert strict["score"] is None or strict["score"] == pytest.approx(1.0)  # the answer key scores perfectly
    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert on_disk["score"] == strict["score"]
    assert len(pd.read_csv(out / "cases.csv")) == strict["n"]


@pytest.mark.slow
@pytest.mark.parametrize("challenge", sorted(TILE_SETTING))
def test_every_cache_refuses_changed_settings(challenge: str, samples: dict[str, Path], tmp_path: Path) -> None:
    flag, first, second, extra = TILE_SETTING[challenge]
    cache = tmp_path / "cache"
    base = [challenge, "tile", "--data", str(samples[challenge]), "--cache", str(cache), *extra]
    assert _invoke(*base, flag, first).exit_code == 0
    refused = _invoke(*base, flag, second)
    assert refused.exit_code == 2, refused.output
    setting = flag.lstrip("-").replace("-", "_")
    assert "--overwrite" in refused.output and (setting in refused.output or flag in refused.output)
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["kind"].startswith(challenge + "-")


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_every_model_round_trips_through_its_spec(challenge: str, tmp_path: Path) -> None:
    import importlib

    import torch

    from medchallenge.core.checkpoint import load_model, save_checkpoint

    registry = importlib.import_module(f"medchallenge.{challenge}.models").MODELS
    required = {("panda", "unet"): {"num_classes": 3}, ("midog", "retinanet"): {"backbone": "resnet18"},
                ("panda", "classifier"): {"arch": "resnet18"}}
    for name in registry.names():
        spec = {"name": name, "kwargs": required.get((challenge, name), {})}
        torch.manual_seed(0)
        model = registry.build(spec)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, {"challenge": challenge, "model": spec, "state_dict": model.state_dict(), "meta": {}})
        loaded, _ = load_model(path, registry, challenge=challenge)
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), f"{challenge} {name} {key}"


def test_docs_cli_names_every_option() -> None:
    """docs/cli.md is the one table of names: every visible option of every command appears in it."""
    text = (PACKAGE.parent / "docs" / "cli.md").read_text()
    missing = sorted({f"{challenge} {verb} {opt}" for challenge, verbs in _commands().items()
                      for verb, command in verbs.items() for opt in _options(command)
                      if f"`{opt}" not in text and f"/{opt}" not in text})
    assert not missing, missing
