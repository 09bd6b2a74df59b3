"""Issue 14 for BraTS: folds by case, out-of-fold rows, ``cv``, ensembles and mirroring TTA at predict.

The organisers' score is re-implemented here from its definition: per case, Dice of WT {1,2,4},
TC {1,4}, ET {4} (2021 labels), 1 when prediction and truth are both empty; means over cases,
and the score is the mean of the three.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from medchallenge.brats.metrics import cv_score
from medchallenge.cli import app
from medchallenge.core.checkpoint import load_model

TINY = ["--epochs", "1", "--patches-per-epoch", "64", "--batch-size", "32", "--device", "cpu", "--workers", "0"]
REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _ok(*args: str) -> str:
    code, output = _run(*args)
    assert code == 0, f"{args}: {output}"
    return output


def organisers_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    out = {}
    for region, labels in REGIONS.items():
        p, t = np.isin(pred, labels), np.isin(truth, labels)
        out[f"{region}_dice"] = 1.0 if not p.any() and not t.any() else 2.0 * (p & t).sum() / (p.sum() + t.sum())
    return out


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic cases (6 labelled) of 2×32×32, tiled, and the three runs of ``--n-folds 3`` in runs/."""
    root = tmp_path_factory.mktemp("brats-cv")
    _ok("brats", "sample", "--out", str(root), "--n-cases", "8", "--size", "32", "--n-slices", "2")
    _ok("brats", "tile", "--data", str(root), "--cache", str(root / "patches"))
    cwd = Path.cwd()
    os.chdir(root)  # the default run folder: ./runs/<model>-phase1-fold<K>-...
    try:
        for fold in range(3):
            _ok("brats", "train", "--cache", "patches", "--n-folds", "3", "--fold", str(fold), *TINY)
    finally:
        os.chdir(cwd)
    return root


def _fold_runs(root: Path) -> dict[int, Path]:
    runs = [p for p in (root / "runs").iterdir() if not p.is_symlink()]
    return {json.loads((p / "split.json").read_text())["fold"]: p for p in runs}


def test_folds_cover_every_case_once_by_case_and_name_the_fold(folds: Path) -> None:
    runs = _fold_runs(folds)
    assert sorted(runs) == [0, 1, 2]
    cases = sorted(p.stem for p in (folds / "patches" / "images").glob("*.npy"))
    assert len(cases) == 6
    seen: list[str] = []
    for fold, run in runs.items():
        assert f"-fold{fold}-" in run.name
        split = json.loads((run / "split.json").read_text())
        assert split["n_folds"] == 3 and split["seed"] == 0
        assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == cases
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(split["val"]) and set(oof["fold"]) == {fold}
        seen += split["val"]
    assert sorted(seen) == cases  # each case validated exactly once
    # stratified by "has enhancing tumour": the trainer's strata are the cases' ET, spread over the folds
    from medchallenge.brats.train import BratsTrainer, HavaeiOptions
    from medchallenge.core.engine import TrainConfig

    has_et = [bool((np.load(folds / "patches" / "labels" / f"{c}.npy") == 4).any()) for c in cases]
    config = TrainConfig(out=folds / "unused", epochs=1, device="cpu", workers=0, n_folds=3, fold=0)
    assert BratsTrainer(config, HavaeiOptions(folds / "patches")).case_strata(cases) == has_et
    et_of = dict(zip(cases, has_et))
    per_fold = [sum(et_of[c] for c in json.loads((r / "split.json").read_text())["val"]) for r in runs.values()]
    assert max(per_fold) - min(per_fold) <= 1, per_fold


def test_oof_rows_are_the_organisers_dice_of_best_pt(folds: Path) -> None:
    from medchallenge.brats.models import MODELS
    from medchallenge.havaei.inference import segment_slices

    run = _fold_runs(folds)[1]
    model, _ = load_model(run / "best.pt", MODELS, challenge="brats")
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    for case, row in oof.iterrows():
        images = np.load(folds / "patches" / "images" / f"{case}.npy")
        truth = np.load(folds / "patches" / "labels" / f"{case}.npy")
        pred = segment_slices(model, images, torch.device("cpu"), allowed=[0, 1, 2, 4])
        pred[~(images != 0).any(axis=0)] = 0
        expected = organisers_dice(pred, truth)
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        for region, labels in REGIONS.items():
            p, t = np.isin(pred, labels), np.isin(truth, labels)
            assert (row[f"{region}_inter"], row[f"{region}_pred"], row[f"{region}_truth"]) == (
                (p & t).sum(), p.sum(), t.sum())


def test_cv_pools_the_folds_with_the_organisers_score(folds: Path, tmp_path: Path) -> None:
    report = json.loads(_ok("brats", "cv", str(folds / "runs"), "--out", str(tmp_path / "cv"), "--json"))
    pooled = pd.concat([pd.read_csv(r / "oof.csv", dtype={"id": str}) for r in _fold_runs(folds).values()])
    means = {}
    for region in REGIONS:
        per_case = [1.0 if p + t == 0 else 2.0 * i / (p + t) for i, p, t in
                    zip(pooled[f"{region}_inter"], pooled[f"{region}_pred"], pooled[f"{region}_truth"])]
        means[f"{region}_dice"] = float(np.mean(per_case))
    assert report["metric"] and report["n"] == 6
    assert report["score"] == pytest.approx(np.mean(list(means.values())))
    assert {k: report[k] for k in means} == pytest.approx(means)
    assert sorted(report["per_fold"]) == ["0", "1", "2"]
    assert json.loads((tmp_path / "cv" / "metrics.json").read_text())["score"] == pytest.approx(report["score"])
    # the cv folder as --checkpoint: the ensemble of its folds' best.pt
    _ok("brats", "predict", "--data", str(folds), "--checkpoint", str(tmp_path / "cv"), "--out", str(tmp_path / "p"),
        "--device", "cpu")
    members = json.loads((tmp_path / "p" / "manifest.json").read_text())["checkpoint"]
    assert sorted(members) == sorted(str((r / "best.pt").resolve()) for r in _fold_runs(folds).values())


def test_cv_score_follows_the_empty_region_rule() -> None:
    oof = pd.DataFrame([  # case a: ET empty in both → 1; case b: ET predicted, none true → 0
        {"id": "a", "wt_inter": 8, "wt_pred": 10, "wt_truth": 10, "tc_inter": 2, "tc_pred": 4, "tc_truth": 4,
         "et_inter": 0, "et_pred": 0, "et_truth": 0},
        {"id": "b", "wt_inter": 0, "wt_pred": 5, "wt_truth": 5, "tc_inter": 3, "tc_pred": 3, "tc_truth": 3,
         "et_inter": 0, "et_pred": 2, "et_truth": 0},
    ])
    score = cv_score(oof)
    assert list(score)[0] == "mean_dice"
    assert score["wt_dice"] == pytest.approx((0.8 + 0.0) / 2) and score["tc_dice"] == pytest.approx((0.5 + 1) / 2)
    assert score["et_dice"] == pytest.approx(0.5)
    assert score["mean_dice"] == pytest.approx((0.4 + 0.75 + 0.5) / 3)
    assert score["wt_dice_global"] == pytest.approx(16 / 30)


def _with_config(run: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(run, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_cv_refuses_other_splits_and_a_fold_twice(folds: Path, tmp_path: Path) -> None:
    runs = _fold_runs(folds)
    other_seed = _with_config(runs[1], tmp_path / "seed1", seed=1)
    other_folds = _with_config(runs[1], tmp_path / "five", n_folds=5)
    for bad, what in ((other_seed, "--seed 1"), (other_folds, "--n-folds 5"), (runs[0], "fold 0 given twice")):
        code, output = _run("brats", "cv", str(runs[0]), str(bad), "--out", str(tmp_path / "cv"))
        assert code == 2 and what in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "cv").exists()


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def test_ensembles_and_mirroring(folds: Path, tmp_path: Path) -> None:
    runs = _fold_runs(folds)
    a, b = str(runs[0] / "best.pt"), str(runs[1])  # a file and a run folder (its best.pt)
    base = ["brats", "predict", "--data", str(folds), "--device", "cpu"]
    out = {name: tmp_path / name for name in ("a", "aa", "b", "ab", "tta")}
    _ok(*base, "--checkpoint", a, "--out", str(out["a"]))
    _ok(*base, "--checkpoint", a, "--checkpoint", a, "--out", str(out["aa"]))
    _ok(*base, "--checkpoint", b, "--out", str(out["b"]))
    _ok(*base, "--checkpoint", a, "--checkpoint", b, "--out", str(out["ab"]))
    _ok(*base, "--checkpoint", a, "--tta", "--out", str(out["tta"]))
    single, twice, other, both, mirrored = (_labels(out[k]) for k in ("a", "aa", "b", "ab", "tta"))
    assert len(single) == 8 and all(np.array_equal(single[k], twice[k]) for k in single)  # A+A == A, bitwise
    assert any(not np.array_equal(both[k], single[k]) for k in single)
    assert any(not np.array_equal(both[k], other[k]) for k in single)
    assert any(not np.array_equal(mirrored[k], single[k]) for k in single)  # --tta changes the outputs
    manifest = json.loads((out["tta"] / "manifest.json").read_text())
    assert manifest["options"] == {"tta": True}
    assert isinstance(json.loads((out["ab"] / "manifest.json").read_text())["checkpoint"], list)
    case = sorted(single)[0][: -len(".nii.gz")]
    np.testing.assert_array_equal(mirrored[f"{case}.nii.gz"], _my_tta(runs[0] / "best.pt", folds / case))


def _my_tta(checkpoint: Path, folder: Path) -> np.ndarray:
    """The mirroring TTA by hand: softmax of the slice as is, flipped in x, in y and in both (flipped
    back), averaged; class 3 excluded; 0 outside the brain; as the 2021 labels (class = label)."""
    from medchallenge.brats.models import MODELS
    from medchallenge.brats.preprocess import normalise_brats

    model, _ = load_model(checkpoint, MODELS, challenge="brats")
    raw = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{folder.name}_{m}.nii.gz")))
                    for m in ("flair", "t1", "t1ce", "t2")]).astype(np.float32)  # 4×S×H×W (axial axis 0 here)
    x = torch.from_numpy(normalise_brats(raw)[0]).permute(1, 0, 2, 3)  # S×4×H×W
    probs = torch.zeros(x.shape[0], 5, *x.shape[2:])
    with torch.no_grad():
        for dims in ((), (3,), (2,), (2, 3)):
            view = x.flip(dims) if dims else x
            logits = model(torch.nn.functional.pad(view, (16, 16, 16, 16)))
            logits = logits.flip(dims) if dims else logits
            logits[:, 3] = -torch.inf
            probs += torch.softmax(logits, dim=1) / 4
    labels = probs.argmax(dim=1).numpy().astype(np.uint8)
    labels[~(raw != 0).any(axis=0)] = 0
    return labels
