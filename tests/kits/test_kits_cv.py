"""KiTS results that hold up (issue 14): folds by case, out-of-fold rows, ``cv`` against the starter
code's Dice written out here, ensembles and test-time mirroring against a hand-written average.
Three tiny fold runs on 6 synthetic 32 px training cases; random-weight checkpoints for predict."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import load_model, save_checkpoint
from medchallenge.core.nifti import read_volume
from medchallenge.kits.models import MODELS, unet_spec
from medchallenge.kits.sample import write_sample_dataset
from medchallenge.kits.slices import Normalisation

TINY = ["--epochs", "1", "--batch-size", "4", "--depth", "2", "--width", "4", "--device", "cpu", "--workers", "0"]
TRAIN_CASES = [f"case_{n:05d}" for n in range(6)]


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def _ok(args: list[str]) -> Any:
    result = _invoke(args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Fold runs 0, 1, 2 of ``--n-folds 3`` under their default names (runs/unet-fold<K>-...)."""
    root = tmp_path_factory.mktemp("kits-cv")
    _ok(["kits", "sample", "--out", str(root), "--n-cases", "8", "--size", "32", "--seed", "4"])
    _ok(["kits", "tile", "--data", str(root), "--cache", str(root / "slices")])
    here = Path.cwd()
    os.chdir(root)
    try:
        for k in range(3):  # no --patch-size: the 32 px cached slices, not the 512 px default
            _ok(["kits", "train", "--n-folds", "3", "--fold", str(k), *TINY])
    finally:
        os.chdir(here)
    runs = {}
    for k in range(3):
        (run,) = (root / "runs").glob(f"unet-fold{k}-*")
        runs[k] = run
    return runs


def _split(run: Path) -> dict:
    return json.loads((run / "split.json").read_text())


def test_folds_cover_every_case_once_and_are_recorded(folds: dict[int, Path]) -> None:
    vals = []
    for k, run in folds.items():
        split = _split(run)
        assert (split["n_folds"], split["fold"], split["seed"]) == (3, k, 0)
        assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == TRAIN_CASES
        config = json.loads((run / "config.json").read_text())
        assert (config["n_folds"], config["fold"]) == (3, k)
        assert config["options"]["patch_size"] == 32  # the default fits the cached slices
        assert (config["options"]["loss"], config["options"]["oversample"]) == ("dice-ce", 0.33)  # ones that learn
        oof = pd.read_csv(run / "oof.csv")
        assert sorted(oof["id"]) == split["val"]
        vals.append(set(split["val"]))
    assert sorted(c for v in vals for c in v) == TRAIN_CASES  # disjoint, and together every case


def _starter_code_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """neheller/kits19 starter_code/evaluation.py, as written (an empty-in-both region divides 0/0 → NaN)."""
    with np.errstate(invalid="ignore"):
        tk_pd, tk_gt = np.greater(pred, 0), np.greater(gt, 0)
        tk = 2 * np.logical_and(tk_pd, tk_gt).sum() / (tk_pd.sum() + tk_gt.sum())
        tu_pd, tu_gt = np.greater(pred, 1), np.greater(gt, 1)
        tu = 2 * np.logical_and(tu_pd, tu_gt).sum() / (tu_pd.sum() + tu_gt.sum())
    return float(tk), float(tu)


def _best_model(run: Path) -> torch.nn.Module:
    model, _ = load_model(run / "best.pt", MODELS, challenge="kits")
    return model.eval()


def test_cv_equals_the_official_dice_on_the_pooled_folds(folds: dict[int, Path], tmp_path: Path) -> None:
    """Each validation case re-segmented here with its fold's best.pt, scored with the starter code."""
    cache = next(iter(folds.values())).parent.parent / "slices"
    per_case, counts = [], {"kidney": np.zeros(3), "tumor": np.zeros(3)}
    for run in folds.values():
        model = _best_model(run)
        for case in _split(run)["val"]:
            images = torch.from_numpy(np.load(cache / "images" / f"{case}.npy").astype(np.float32))[:, None]
            truth = np.load(cache / "labels" / f"{case}.npy")
            with torch.no_grad():
                pred = torch.cat([model(images[i : i + 8]) for i in range(0, len(images), 8)]).argmax(1).numpy()
            kidney, tumour = _starter_code_dice(pred, truth)
            defined = [v for v in (kidney, tumour) if not np.isnan(v)]
            per_case.append((kidney, tumour, np.mean(defined) if defined else np.nan))
            for region, first in (("kidney", 1), ("tumor", 2)):
                p, t = pred >= first, truth >= first
                counts[region] += [(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]
    result = _ok(["kits", "cv", *map(str, folds.values()), "--out", str(tmp_path / "cv"), "--json"])
    report = json.loads(result.stdout)
    expected = np.asarray(per_case)
    assert report["metric"] == "composite_dice" and report["n"] == 6
    assert report["score"] == pytest.approx(np.nanmean(expected[:, 2]), abs=1e-12)
    assert report["kidney_dice"] == pytest.approx(np.nanmean(expected[:, 0]), abs=1e-12)
    for region in ("kidney", "tumor"):
        tp, fp, fn = counts[region]
        assert report[f"global_{region}_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert sorted(report["per_fold"]) == ["0", "1", "2"]
    assert {p.name for p in (tmp_path / "cv").iterdir()} >= {"metrics.json", "cases.csv"}


def test_cv_refuses_folds_of_other_splits_and_a_fold_twice(folds: dict[int, Path], tmp_path: Path) -> None:
    result = _invoke(["kits", "cv", str(folds[0]), str(folds[0]), "--out", str(tmp_path / "cv")])
    assert result.exit_code == 2 and "fold 0 given twice" in result.output
    for key, value in (("seed", 1), ("n_folds", 4)):
        other = tmp_path / f"other-{key}"
        shutil.copytree(folds[1], other, symlinks=True)
        config = json.loads((other / "config.json").read_text())
        config[key] = value
        (other / "config.json").write_text(json.dumps(config))
        result = _invoke(["kits", "cv", str(folds[0]), str(other), "--out", str(tmp_path / "cv")])
        assert result.exit_code == 2 and "folds of different splits" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


NORM = {"low": -79.0, "high": 304.0, "mean": 101.0, "std": 76.9}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two checkpoints of differently seeded random U-Nets (their labels vary from voxel to voxel, unlike a
    1-epoch run's all-background output), one with another normalisation, and 2 test cases."""
    root = tmp_path_factory.mktemp("kits-ensembles")
    write_sample_dataset(root, n_cases=4, size=32, seed=5)  # test case_00210
    paths = {"data": root}
    for name, seed, norm in (("a", 0, NORM), ("b", 1, NORM), ("window", 0, {**NORM, "high": 200.0})):
        torch.manual_seed(seed)
        net = MODELS.build(unet_spec(depth=2, width=4))
        with torch.no_grad():  # a random head favours one class everywhere: make the labels follow the image
            net.head.bias.zero_()
            net.head.weight.mul_(20)
        paths[name] = root / f"{name}.pt"
        save_checkpoint(paths[name], {"challenge": "kits", "model": unet_spec(depth=2, width=4),
                                      "state_dict": net.state_dict(), "meta": {"normalisation": norm}})
    return paths


def _predict(models: dict[str, Path], out: Path, *names: str, tta: bool = False) -> dict[str, np.ndarray]:
    args = ["kits", "predict", "--data", str(models["data"]), "--out", str(out), "--cases", "0,210", "--device",
            "cpu", "--batch-size", "64"]
    for name in names:
        args += ["--checkpoint", str(models[name])]
    _ok([*args, *(["--tta"] if tta else [])])
    return {p.name: read_volume(p).array for p in sorted(out.glob("prediction_*.nii.gz"))}


def test_ensembles(models: dict[str, Path], tmp_path: Path) -> None:
    single = _predict(models, tmp_path / "a", "a")
    twice = _predict(models, tmp_path / "aa", "a", "a")
    assert list(single) == ["prediction_00000.nii.gz", "prediction_00210.nii.gz"]
    assert all(np.array_equal(single[k], twice[k]) for k in single)  # bitwise
    other = _predict(models, tmp_path / "b", "b")
    both = _predict(models, tmp_path / "ab", "a", "b")
    assert not all(np.array_equal(both[k], single[k]) for k in single)
    assert not all(np.array_equal(both[k], other[k]) for k in single)
    manifest = json.loads((tmp_path / "ab" / "manifest.json").read_text())
    assert manifest["options"] == {"tta": False}
    result = _invoke(["kits", "predict", "--data", str(models["data"]), "--out", str(tmp_path / "w"), "--device",
                      "cpu", "--checkpoint", str(models["a"]), "--checkpoint", str(models["window"])])
    assert result.exit_code == 2 and str(models["window"]) in result.output and "normalisation" in result.output
    assert not (tmp_path / "w").exists()


def test_tta_averages_the_four_mirrored_softmaxes(models: dict[str, Path], tmp_path: Path) -> None:
    plain = _predict(models, tmp_path / "plain", "a")
    mirrored = _predict(models, tmp_path / "tta", "a", tta=True)
    assert not all(np.array_equal(plain[k], mirrored[k]) for k in plain)
    # case_00210 by hand: HU → window/z-score → softmax of each flipped view, flipped back, averaged
    image = read_volume(models["data"] / "data" / "case_00210" / "imaging.nii.gz")
    x = torch.from_numpy(Normalisation()(image.axial_first()))[:, None]  # 32×32 slices: no padding at depth 2
    model, _ = load_model(models["a"], MODELS, challenge="kits")
    with torch.no_grad():
        total = sum(torch.softmax(model(x.flip(d)).float(), 1).flip(d) if d else torch.softmax(model(x).float(), 1)
                    for d in ((), (-1,), (-2,), (-2, -1)))
    expected = image.from_axial_first((total / 4).argmax(1).numpy().astype(np.uint8))
    np.testing.assert_array_equal(mirrored["prediction_00210.nii.gz"], expected)


def test_cv_score_of_hand_made_cases_equals_the_starter_code() -> None:
    """Random label volumes (one with no tumour in either: NaN, left out) → oof rows → cv_score."""
    from medchallenge.kits.metrics import cv_score, oof_row, score_case

    rng = np.random.default_rng(0)
    rows, per_case, pooled = [], [], {"kidney": np.zeros(3), "tumor": np.zeros(3)}
    for i in range(5):
        truth, pred = (rng.choice(3, size=(4, 9, 9), p=[0.7, 0.2, 0.1]).astype(np.uint8) for _ in range(2))
        if i == 0:
            truth[truth == 2], pred[pred == 2] = 1, 1  # tumour empty in both: its Dice is NaN
        rows.append(oof_row(score_case(f"case_{i:05d}", pred, truth)))
        kidney, tumour = _starter_code_dice(pred, truth)
        per_case.append((kidney, tumour, np.nanmean([kidney, tumour])))
        for region, first in (("kidney", 1), ("tumor", 2)):
            p, t = pred >= first, truth >= first
            pooled[region] += [(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]
    expected = np.asarray(per_case)
    assert np.isnan(expected[0, 1]) and expected[0, 2] == expected[0, 0]
    score = cv_score(pd.DataFrame(rows))
    assert list(score)[0] == "composite_dice"
    assert score["composite_dice"] == pytest.approx(expected[:, 2].mean(), abs=1e-12)
    assert score["kidney_dice"] == pytest.approx(expected[:, 0].mean(), abs=1e-12)
    assert score["tumor_dice"] == pytest.approx(np.nanmean(expected[:, 1]), abs=1e-12)
    for region in ("kidney", "tumor"):
        tp, fp, fn = pooled[region]
        assert score[f"global_{region}_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
