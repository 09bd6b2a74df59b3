"""The shared CLI surface of brats and lits (issue 12): options, aliases, choices before torch, cache
settings, evaluate reports, predict parts, spec round trips and the import rule."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.brats.models import MODELS as BRATS_MODELS
from medchallenge.cli import app
from medchallenge.core.checkpoint import load_model, save_checkpoint
from medchallenge.core.cliflags import ENGINE_FLAG_NAMES
from medchallenge.core.nifti import Geometry, write_volume
from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN
from medchallenge.lits.models import MODELS as LITS_MODELS

PACKAGE = Path(__file__).resolve().parents[2] / "medchallenge"
ENGINE = {"--" + n.replace("_", "-") for n in ENGINE_FLAG_NAMES}
SHARED = {
    "sample": {"--out", "--seed", "--n-slices"},
    "tile": {"--data", "--cache", "--part", "--overwrite", "--workers"},
    "train": {"--cache", "--out", "--model", "--from", "--l1", "--val-max-cases", "--phase"} | ENGINE,
    "predict": {"--checkpoint", "--data", "--out", "--part", "--overwrite", "--batch-size", "--device"},
    "evaluate": {"--truth", "--predictions", "--out", "--json"},
}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("challenge", ["brats", "lits"])
@pytest.mark.parametrize("verb", sorted(SHARED))
def test_help_lists_the_shared_options(challenge: str, verb: str) -> None:
    code, output = _run(challenge, verb, "--help")
    assert code == 0, output
    missing = [flag for flag in SHARED[verb] if flag not in output]
    assert not missing, f"{challenge} {verb} --help lacks {missing}"
    if verb == "train":
        assert "--l2" not in output  # a hidden deprecated alias


@pytest.mark.parametrize(("args", "what"), [
    (["brats", "train", "--model", "resnet"], "resnet"),
    (["lits", "train", "--transfer", "half"], "half"),
    (["brats", "evaluate", "--truth", ".", "--ablate", "middle"], "middle"),
    (["brats", "train", "--phase", "3"], "--phase"),
])
def test_a_bad_choice_is_refused_before_torch_is_imported(args: list[str], what: str) -> None:
    code = ("import sys; from medchallenge.cli import main\n"
            f"sys.argv = ['medchallenge', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('EXIT', code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False" in done.stdout, done.stdout + done.stderr
    assert what in done.stderr


@pytest.mark.parametrize("challenge", ["brats", "lits"])
def test_the_report_schedule_refuses_optimizer_and_scheduler(challenge: str) -> None:
    code, output = _run(challenge, "train", "--optimizer", "adam", "--cache", "nowhere")
    assert code == 2 and "--optimizer is not supported here" in output and "momentum" in output, output
    code, output = _run(challenge, "train", "--scheduler", "cosine", "--cache", "nowhere")
    assert code == 2 and "--scheduler is not supported here" in output, output


def test_deprecated_aliases_work_and_say_so(tmp_path: Path) -> None:
    code, output = _run("brats", "sample", "--out", str(tmp_path / "s"), "--n-cases", "3", "--size", "32",
                        "--slices", "2")
    assert code == 0 and "--slices is deprecated" in output and "--n-slices" in output, output
    code, output = _run("brats", "tile", "--data", str(tmp_path / "s"), "--out", str(tmp_path / "c"))
    assert code == 0 and "--out is deprecated" in output and (tmp_path / "c" / "meta.json").is_file(), output
    # --l2 reaches the engine as --weight-decay: config.json records it (the run stops at a missing cache)
    code, output = _run("lits", "train", "--l2", "0.125", "--cache", str(tmp_path / "none"), "--transfer", "none")
    assert "--l2 is deprecated" in output and "--weight-decay" in output and code == 2, output


def test_l2_alias_sets_weight_decay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_fit(self) -> dict:  # noqa: ANN001
        seen["wd"] = self.config.weight_decay
        return {"best": {"mean_dice": 0.0}}

    monkeypatch.setattr("medchallenge.havaei.trainer.HavaeiTrainer.fit", fake_fit)
    _run("brats", "sample", "--out", str(tmp_path / "s"), "--n-cases", "3", "--size", "32", "--n-slices", "2")
    _run("brats", "tile", "--data", str(tmp_path / "s"), "--cache", str(tmp_path / "c"))
    code, output = _run("brats", "train", "--cache", str(tmp_path / "c"), "--l2", "0.125", "--out", str(tmp_path / "r"))
    assert code == 0 and seen["wd"] == 0.125, output


@pytest.mark.parametrize("challenge", ["brats", "lits"])
def test_a_changed_cache_setting_is_one_line_naming_it(tmp_path: Path, challenge: str) -> None:
    _run(challenge, "sample", "--out", str(tmp_path / "s"), "--n-cases", "3", "--size", "32", "--n-slices", "2")
    cache = tmp_path / "c"
    code, output = _run(challenge, "tile", "--data", str(tmp_path / "s"), "--cache", str(cache))
    assert code == 0, output
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["kind"] == f"{challenge}-patches"
    meta["settings"]["normalisation"] = "made by another version"
    (cache / "meta.json").write_text(json.dumps(meta))
    code, output = _run(challenge, "tile", "--data", str(tmp_path / "s"), "--cache", str(cache))
    assert code == 2 and "normalisation" in output and "--overwrite" in output, output
    assert len(output.strip().splitlines()) == 1
    code, output = _run(challenge, "tile", "--data", str(tmp_path / "s"), "--cache", str(cache), "--overwrite")
    assert code == 0, output
    assert json.loads((cache / "meta.json").read_text())["settings"]["normalisation"] != "made by another version"


def _constant(path: Path, challenge: str, winner: int) -> Path:
    """A TwoPathCNN checkpoint whose output layer calls every voxel class ``winner``."""
    channels, classes = (4, 5) if challenge == "brats" else (1, 3)
    registry = BRATS_MODELS if challenge == "brats" else LITS_MODELS
    spec = {"name": "twopath", "kwargs": {"in_channels": channels, "num_classes": classes, "pieces": 2, "dropout": 0.0}}
    model = registry.build(spec)
    with torch.no_grad():
        model.output_layer.weight.zero_()
        model.output_layer.bias.zero_()
        model.output_layer.bias[winner] = 10.0
    save_checkpoint(path, {"challenge": challenge, "model": spec, "state_dict": model.state_dict(), "meta": {},
                           "config": {}})
    return path


def _brats_tests(root: Path, n: int) -> None:
    """``n`` unlabelled 2021 cases of 3×10×12 voxels, brain everywhere."""
    geometry = Geometry((12, 10, 3), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for k in range(n):
        for m in ("flair", "t1", "t1ce", "t2"):
            image = np.random.default_rng(k).integers(1, 400, (3, 10, 12)).astype(np.int16)
            write_volume(root / f"c{k}" / f"c{k}_{m}.nii.gz", image, geometry)


def _outputs(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}


def test_predict_honours_part_overwrite_and_the_checkpoint_that_made_each_output(tmp_path: Path) -> None:
    from medchallenge.core.nifti import read_volume

    _brats_tests(tmp_path / "data", 4)
    edema = _constant(tmp_path / "edema.pt", "brats", 2)
    out = tmp_path / "pred"
    base = ["brats", "predict", "--checkpoint", str(edema), "--data", str(tmp_path / "data"), "--out", str(out),
            "--device", "cpu"]
    assert _run(*base, "--part", "1/2")[0] == 0
    first = set(_outputs(out))
    assert len(first) == 2
    assert _run(*base, "--part", "2/2")[0] == 0
    assert len(_outputs(out)) == 4 and first < set(_outputs(out))
    stamp = _outputs(out)
    code, output = _run(*base)
    assert code == 0 and _outputs(out) == stamp and "4 made by this checkpoint already" in output, output
    tumour = _constant(tmp_path / "et.pt", "brats", 4)  # retrained: every output is redone, and said
    code, output = _run(*[a if a != str(edema) else str(tumour) for a in base])
    assert code == 0 and "4 output(s)" in output and "made by another checkpoint" in output, output
    assert all(new != stamp[name] for name, new in _outputs(out).items())
    assert set(np.unique(read_volume(out / "c0.nii.gz").array).tolist()) == {4}
    assert json.loads((out / "manifest.json").read_text())["checkpoint"] == str(tumour.resolve())
    stamp = _outputs(out)
    assert _run(*base, "--overwrite", "--part", "1/2")[0] == 0  # --overwrite redoes this part whatever made it
    assert set(np.unique(read_volume(out / "c0.nii.gz").array).tolist()) == {2}
    assert sum(stamp[n] != t for n, t in _outputs(out).items()) == 2


def _brats_truth_and_pred(root: Path) -> None:
    geometry = Geometry((4, 3, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(root / "truth" / "c1" / "c1_seg.nii.gz", np.array([0, 1, 2, 4] * 6, np.uint8).reshape(2, 3, 4), geometry)
    write_volume(root / "pred" / "c1.nii.gz", np.array([0, 1, 2, 2] * 6, np.uint8).reshape(2, 3, 4), geometry)


def _lits_truth_and_pred(root: Path) -> None:
    geometry = Geometry((4, 3, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(root / "truth" / "segmentation-0.nii", np.array([0, 1, 1, 2] * 6, np.uint8).reshape(2, 3, 4), geometry,
                 compress=False)
    write_volume(root / "pred" / "segmentation-0.nii", np.array([0, 1, 2, 2] * 6, np.uint8).reshape(2, 3, 4), geometry,
                 compress=False)


@pytest.mark.parametrize(("challenge", "score", "plot"), [
    ("brats", (1.0 + 2 / 3 + 0.0) / 3, "dice_per_region.png"), ("lits", 2 / 3, "dice_per_case.png")])
def test_evaluate_writes_the_report_and_strict_json(tmp_path: Path, challenge: str, score: float, plot: str) -> None:
    (_brats_truth_and_pred if challenge == "brats" else _lits_truth_and_pred)(tmp_path)
    code, output = _run(challenge, "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                        str(tmp_path / "truth"), "--out", str(tmp_path / "ev"), "--json")
    assert code == 0, output
    printed = json.loads(output)
    assert list(printed)[:5] == ["challenge", "metric", "score", "n", "version"]
    assert printed["challenge"] == challenge and printed["n"] == 1 and printed["score"] == pytest.approx(score)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == printed
    assert "case" in (tmp_path / "ev" / "cases.csv").read_text().splitlines()[0]
    assert (tmp_path / "ev" / plot).stat().st_size > 0
    code, output = _run(challenge, "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                        str(tmp_path / "truth"))
    assert code == 0 and (Path.cwd() / "evaluation" / "metrics.json").is_file(), output  # default ./evaluation


@pytest.mark.parametrize(("registry", "channels", "classes"), [(BRATS_MODELS, 4, 5), (LITS_MODELS, 1, 3)])
@pytest.mark.parametrize("name", ["twopath", "inputcascade"])
def test_every_model_round_trips_through_its_spec(tmp_path: Path, registry, channels: int, classes: int,  # noqa: ANN001
                                                  name: str) -> None:
    spec = {"name": name, "kwargs": {"in_channels": channels, "num_classes": classes, "pieces": 2, "dropout": 0.2}}
    torch.manual_seed(0)
    model = registry.build(spec).eval()
    save_checkpoint(tmp_path / "m.pt", {"challenge": registry.challenge, "model": spec,
                                        "state_dict": model.state_dict(), "meta": {}, "config": {}})
    loaded, _ = load_model(tmp_path / "m.pt", registry, challenge=registry.challenge,
                           expect={"in_channels": channels})
    x = torch.rand(1, channels, 70, 70)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training
    assert type(loaded) is {"twopath": TwoPathCNN, "inputcascade": InputCascadeCNN}[name]


def _imports(package: str) -> set[str]:
    found = set()
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("brats", "medchallenge.lits"), ("lits", "medchallenge.brats"),
    ("havaei", "medchallenge.brats"), ("havaei", "medchallenge.lits"), ("havaei", "medchallenge.cli"),
])
def test_brats_and_lits_are_siblings(package: str, forbidden: str) -> None:
    bad = sorted(m for m in _imports(package) if m == forbidden or m.startswith(forbidden + "."))
    assert not bad, f"medchallenge.{package} imports {bad}"
    assert any(m.startswith("medchallenge.havaei") for m in _imports("brats") & _imports("lits"))


def test_sample_writes_the_2023_naming_with_the_same_signal(tmp_path: Path) -> None:
    from medchallenge.brats.data import find_cases, read_case

    for naming in ("2021", "2023"):
        code, output = _run("brats", "sample", "--out", str(tmp_path / naming), "--n-cases", "3", "--size", "32",
                            "--n-slices", "2", "--naming", naming)
        assert code == 0, output
    old, new = find_cases(tmp_path / "2021"), find_cases(tmp_path / "2023")
    assert {c.convention for c in old} == {"brats2021"} and {c.convention for c in new} == {"brats2023"}
    assert new[0].name == "BraTS-GLI-00001-000" and new[0].images[0].name == "BraTS-GLI-00001-000-t2f.nii.gz"
    images_old, _, classes_old = read_case(old[0])
    images_new, _, classes_new = read_case(new[0])
    np.testing.assert_array_equal(images_old, images_new)
    np.testing.assert_array_equal(classes_old, classes_new)  # ET is 3 in the 2023 file, class 4 inside
    assert (classes_new == 4).any()
    assert (tmp_path / "2023" / "answers" / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-seg.nii.gz").is_file()
