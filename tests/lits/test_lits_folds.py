"""Folds, out-of-fold rows and ``lits cv`` (issue 14), and the training's TensorBoard (issue 13).

The cv numbers are checked against the official scoring program's rules (re-implemented in
test_lits_scoring.py from PatrickChrist/lits-challenge-scoring) applied to each fold model's own
segmentation of its validation volumes, computed here with the bare network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import expand_checkpoints
from medchallenge.havaei.models import TwoPathCNN
from tests.lits.conftest import invoke
from tests.lits.test_lits_scoring import official

CASES = {f"volume-{n}" for n in range(4)}  # the sample's training volumes


def _splits(runs: list[Path]) -> list[dict]:
    return [json.loads((run / "split.json").read_text()) for run in runs]


def test_folds_validate_every_volume_exactly_once(fold_runs: list[Path]) -> None:
    splits = _splits(fold_runs)
    assert [(s["n_folds"], s["fold"], s["seed"]) for s in splits] == [(3, 0, 0), (3, 1, 0), (3, 2, 0)]
    assert sorted(c for s in splits for c in s["val"]) == sorted(CASES)  # each volume validated once
    for s in splits:
        assert set(s["train"]) | set(s["val"]) == CASES and not set(s["train"]) & set(s["val"])
    assert [f"fold{k}" in run.name for k, run in enumerate(fold_runs)] == [True] * 3
    for run, s in zip(fold_runs, splits):
        oof = pd.read_csv(run / "oof.csv")
        assert sorted(oof["id"]) == sorted(s["val"]) and set(oof["fold"]) == {s["fold"]}


def _segment(run: Path, images: np.ndarray) -> np.ndarray:
    """The fold's best.pt on whole slices, written here: zero-pad by 16 px, forward, argmax (S×H×W)."""
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    model = TwoPathCNN(**checkpoint["model"]["kwargs"]).eval()
    model.load_state_dict(checkpoint["state_dict"])
    x = torch.from_numpy(np.swapaxes(images, 0, 1).astype(np.float32))
    with torch.no_grad():
        return model(F.pad(x, (16, 16, 16, 16))).argmax(1).numpy()


def test_cv_is_the_official_score_of_the_pooled_validation_volumes(fold_runs: list[Path], lits_sample: Path,
                                                                    tmp_path: Path) -> None:
    cache, pairs = lits_sample / "patches", []
    for run, s in zip(fold_runs, _splits(fold_runs)):
        for case in s["val"]:
            pred = _segment(run, np.load(cache / "images" / f"{case}.npy"))
            pairs.append((pred, np.load(cache / "labels" / f"{case}.npy")))
            row = pd.read_csv(run / "oof.csv").set_index("id").loc[case]
            one = official([pairs[-1]])
            assert (row.liver_dice, row.tumor_dice) == pytest.approx((one["liver_dice_per_case"],
                                                                       one["tumor_dice_per_case"]))
    expected = official(pairs)
    output = invoke("lits", "cv", *fold_runs, "--out", tmp_path / "cv", "--json")
    metrics = json.loads(output.strip().splitlines()[-1])
    assert metrics["metric"] == "tumor_dice_per_case" and metrics["n"] == 4
    assert metrics["score"] == pytest.approx(expected["tumor_dice_per_case"])
    for key in ("liver_dice_per_case", "liver_dice_global", "tumor_dice_global"):
        assert metrics[key] == pytest.approx(expected[key]), key
    assert set(metrics["per_fold"]) == {"0", "1", "2"}
    assert (tmp_path / "cv" / "metrics.json").is_file() and len(pd.read_csv(tmp_path / "cv" / "cases.csv")) == 4
    # `predict --checkpoint cv` ensembles the folds' best.pt
    assert expand_checkpoints([tmp_path / "cv"]) == [run.absolute() / "best.pt" for run in fold_runs]


def _copy(run: Path, to: Path, **config: int) -> Path:
    shutil.copytree(run, to)
    record = json.loads((to / "config.json").read_text())
    (to / "config.json").write_text(json.dumps({**record, **config}))
    return to


@pytest.mark.parametrize(("change", "words"), [({}, "fold 0 given twice"), ({"seed": 1}, "--seed"),
                                               ({"n_folds": 5}, "--n-folds 5")])
def test_cv_refuses_folds_of_different_splits(fold_runs: list[Path], tmp_path: Path, change: dict,
                                              words: str) -> None:
    other = _copy(fold_runs[0], tmp_path / "other", **change)
    result = CliRunner().invoke(app, ["lits", "cv", str(fold_runs[0]), str(other), "--out", str(tmp_path / "cv")])
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.output
    assert not (tmp_path / "cv").exists()


def test_tensorboard_has_previews_step_loss_and_the_monitor(fold_runs: list[Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(fold_runs[0] / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    previews = [t for t in tags["images"] if t.startswith("preview/")]
    assert previews and all(t.removeprefix("preview/") in _splits(fold_runs)[0]["val"] for t in previews)
    assert {"train/loss_step", "mean_dice"} <= set(tags["scalars"]), tags["scalars"]


def test_cv_of_hand_made_oof_files(tmp_path: Path) -> None:
    """oof.csv files written by hand (counts from the official rules) pool to the official numbers."""
    rng = np.random.default_rng(3)
    pairs = [(rng.choice(3, (2, 4, 4), p=[0.5, 0.3, 0.2]), rng.choice(3, (2, 4, 4), p=[0.5, 0.4, 0.1]))
             for _ in range(5)]
    pairs[1][0][pairs[1][0] == 1] = 2  # no liver label predicted: liver Dice 0, only the truth pooled
    pairs[2][0][:], pairs[2][1][pairs[2][1] == 2] = 1, 1  # no tumour on either side: tumour Dice 1
    runs = []
    for fold, members in enumerate(([0, 1, 2], [3, 4])):
        run = tmp_path / f"fold{fold}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"challenge": "lits", "n_folds": 2, "fold": fold, "seed": 7}))
        rows = []
        for i in members:
            sub, ref = pairs[i]
            one = official([(sub, ref)])
            liver_i = int(((sub >= 1) & (ref >= 1)).sum()) if (sub == 1).any() else 0
            liver_s = int((sub >= 1).sum()) * bool((sub == 1).any()) + int((ref >= 1).sum())
            rows.append({"id": f"volume-{i}", "fold": fold, "liver_dice": one["liver_dice_per_case"],
                         "tumor_dice": one["tumor_dice_per_case"], "liver_intersection": liver_i,
                         "liver_size_sum": liver_s, "tumor_intersection": int(((sub == 2) & (ref == 2)).sum()),
                         "tumor_size_sum": int((sub == 2).sum() + (ref == 2).sum())})
        pd.DataFrame(rows).to_csv(run / "oof.csv", index=False)
        runs.append(run)
    metrics = json.loads(invoke("lits", "cv", *runs, "--out", tmp_path / "cv", "--json").strip().splitlines()[-1])
    expected = official(pairs)
    assert metrics["score"] == pytest.approx(expected["tumor_dice_per_case"])
    assert {k: metrics[k] for k in ("liver_dice_per_case", "liver_dice_global", "tumor_dice_global")} == \
        pytest.approx({k: expected[k] for k in ("liver_dice_per_case", "liver_dice_global", "tumor_dice_global")})
    assert metrics["per_fold"]["1"] == pytest.approx(official(pairs[3:])["tumor_dice_per_case"])
    (runs[1] / "oof.csv").write_text("id,fold,dice\nvolume-3,1,0.5\n")
    result = CliRunner().invoke(app, ["lits", "cv", *map(str, runs), "--out", str(tmp_path / "cv2")])
    assert result.exit_code == 2 and "liver_intersection" in result.output, result.output


def test_folds_are_stratified_by_tumour(tmp_path: Path) -> None:
    """6 training volumes, 3 without tumour: each of 3 folds validates one with and one without."""
    from medchallenge.core.engine import TrainConfig
    from medchallenge.core.nifti import read_volume, write_volume
    from medchallenge.lits.train import LitsOptions, LitsTrainer

    invoke("lits", "sample", "--out", tmp_path, "--n-cases", "8", "--size", "32", "--n-slices", "2")
    for n in (0, 1, 2):  # tumour → liver
        seg = read_volume(tmp_path / f"segmentation-{n}.nii")
        write_volume(tmp_path / f"segmentation-{n}.nii", np.minimum(seg.array, 1), seg.geometry, compress=False)
    invoke("lits", "tile", "--data", tmp_path, "--cache", tmp_path / "patches")
    for seed in range(6):  # an unstratified split mixes every fold 40% of the time: 0.4**6 < 1%
        vals = []
        for fold in range(3):
            config = TrainConfig(out=tmp_path / "run", n_folds=3, fold=fold, seed=seed, device="cpu")
            trainer = LitsTrainer(config, LitsOptions(tmp_path / "patches", transfer="none"))
            vals.append(sorted(trainer.val_cases))
        assert sorted(c for v in vals for c in v) == [f"volume-{n}" for n in range(6)]
        assert all(len({c in ("volume-0", "volume-1", "volume-2") for c in v}) == 2 for v in vals), vals
