"""Folds, cv, ensembles, TTA, tuned ordinal cut-offs and OOF label cleaning (tiny data, 1 epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.engine import TrainConfig
from medchallenge.panda.cutoffs import FIXED, apply_cutoffs, tune_cutoffs
from medchallenge.panda.train import PandaOptions, PandaTrainer

pytestmark = pytest.mark.slow

TRAIN = ["--model", "resnet18", "--no-pretrained", "--batch-size", "4", "--lr", "1e-3", "--workers", "0",
         "--device", "cpu", "--epochs", "1", "--seed", "0"]


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


def own_qwk(truth: np.ndarray, pred: np.ndarray, k: int = 6) -> float:
    """Quadratic weighted kappa written out from its definition (as sklearn's cohen_kappa_score computes it)."""
    observed = np.zeros((k, k))
    for t, p in zip(truth, pred):
        observed[t, p] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)], dtype=float)
    return 1 - (weights * observed).sum() / (weights * expected).sum()


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 sample slides (9 train), tiled 4×16 px; three fold runs in the default run folders."""
    root = tmp_path_factory.mktemp("panda-folds")
    _ok(["panda", "sample", "--out", str(root / "data"), "--n-slides", "12", "--size", "256", "--seed", "0"])
    _ok(["panda", "tile", "--data", str(root / "data"), "--cache", str(root / "tiles"), "--level", "1",
         "--n-tiles", "4", "--tile-size", "16"])
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the default run folder is runs/<model>-fold<K>-<time>-... under the cwd
        for k in range(3):
            _ok(["panda", "train", "--cache", "tiles", "--n-folds", "3", "--fold", str(k), *TRAIN])
            (run,) = [p for p in (root / "runs").glob(f"resnet18-fold{k}-*") if p.is_dir()]
            runs.append(run)
    return {"root": root, "runs": runs}


def test_folds_cover_every_slide_once_grouped_and_recorded(folds: dict) -> None:
    train_ids = set(pd.read_csv(folds["root"] / "data" / "train.csv")["image_id"])
    vals = []
    for k, run in enumerate(folds["runs"]):
        split = json.loads((run / "split.json").read_text())
        assert (split["n_folds"], split["fold"], split["seed"]) == (3, k, 0)
        assert set(split["train"]) | set(split["val"]) == train_ids and not set(split["train"]) & set(split["val"])
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(split["val"]) and (oof["fold"] == k).all()
        assert list(oof.columns) == ["id", "fold", "provider", "isup", "score", "pred", "pred_fixed"]
        vals.append(set(split["val"]))
    assert sum(len(v) for v in vals) == len(train_ids) and set().union(*vals) == train_ids


def test_cv_pools_the_folds_and_scores_them_as_the_organisers(folds: dict, tmp_path: Path) -> None:
    out = json.loads(_ok(["panda", "cv", *map(str, folds["runs"]), "--out", str(tmp_path / "cv"), "--json"]))
    pooled = pd.concat([pd.read_csv(run / "oof.csv") for run in folds["runs"]])
    assert out["n"] == len(pooled) == 9 and out["metric"] == "qwk"
    expected = own_qwk(pooled["isup"].to_numpy(), pooled["pred"].to_numpy())
    assert out["score"] == pytest.approx(expected, abs=1e-12)
    fixed = own_qwk(pooled["isup"].to_numpy(), pooled["pred_fixed"].to_numpy())
    assert out["qwk_fixed_cutoffs"] == pytest.approx(fixed, abs=1e-12)
    assert (tmp_path / "cv" / "metrics.json").is_file() and len(pd.read_csv(tmp_path / "cv" / "cases.csv")) == 9
    # folds of another split (another seed), or one fold twice: one line, exit 2
    other = tmp_path / "other-seed"
    shutil.copytree(folds["runs"][1], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "seed": 1}))
    assert "folds of different splits" in _error(["panda", "cv", str(folds["runs"][0]), str(other),
                                                   "--out", str(tmp_path / "x")])
    assert "fold 0 given twice" in _error(["panda", "cv", str(folds["runs"][0]), str(folds["runs"][0]),
                                           "--out", str(tmp_path / "y")])


def _models(runs: list[Path]) -> list[torch.nn.Module]:
    from medchallenge.panda.submission import load_ensemble

    return load_ensemble([run / "best.pt" for run in runs], torch.device("cpu"))[0]


def _stacks(seed: int = 0) -> torch.Tensor:
    """Two slides of 4 tiles of 16 px (B×N×3×T×T uint8), not symmetric under any dihedral transform."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, 4, 3, 16, 16), dtype=np.uint8))


def test_ensembles_average_the_models(folds: dict, tmp_path: Path) -> None:
    from medchallenge.panda.submission import mean_scores

    (m0,), (m1,) = _models(folds["runs"][:1]), _models(folds["runs"][1:2])
    x = _stacks()
    with torch.no_grad():
        alone, twice = mean_scores([m0], "ordinal", x, False), mean_scores([m0, m0], "ordinal", x, False)
        pair = mean_scores([m0, m1], "ordinal", x, False)
        assert torch.equal(alone, twice)  # the same checkpoint twice is that checkpoint, bit for bit
        assert not torch.equal(pair, alone) and not torch.equal(pair, mean_scores([m1], "ordinal", x, False))
        assert torch.allclose(pair, (alone + mean_scores([m1], "ordinal", x, False)) / 2)
    # through predict: run0 twice writes what run0 alone writes; a cv folder means its fold models
    data, best = folds["root"] / "data", str(folds["runs"][0] / "best.pt")
    common = ["panda", "predict", "--data", str(data), "--device", "cpu", "--threshold", "0.5,1.5,2.5,3.5,4.5"]
    _ok([*common, "--checkpoint", best, "--out", str(tmp_path / "one")])
    _ok([*common, "--checkpoint", best, "--checkpoint", best, "--out", str(tmp_path / "two")])
    assert (tmp_path / "one" / "submission.csv").read_bytes() == (tmp_path / "two" / "submission.csv").read_bytes()
    _ok(["panda", "cv", *map(str, folds["runs"]), "--out", str(tmp_path / "cv")])
    log = CliRunner().invoke(app, [*common, "--checkpoint", str(tmp_path / "cv"), "--out", str(tmp_path / "cvp")])
    assert log.exit_code == 0 and "(3 models)" in log.output, log.output


def _own_dihedral(tiles: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of the square on every tile (…×H×W): k % 4 quarter turns, mirrored for k ≥ 4."""
    turned = np.rot90(tiles, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(turned[..., ::-1] if k >= 4 else turned)


def test_tta_averages_the_eight_dihedral_views_of_every_tile(folds: dict) -> None:
    from medchallenge.panda.submission import mean_scores

    (model,) = _models(folds["runs"][:1])
    x = _stacks(1)
    with torch.no_grad():
        plain, tta = mean_scores([model], "ordinal", x, False), mean_scores([model], "ordinal", x, True)
        views = [torch.sigmoid(model(torch.from_numpy(_own_dihedral(x.numpy(), k))).float()) for k in range(8)]
    assert not torch.allclose(plain, tta)
    assert torch.allclose(tta, torch.stack(views).mean(dim=0), atol=1e-6)
    assert len({tuple(_own_dihedral(x.numpy(), k)[0, 0, 0].ravel()[:8]) for k in range(8)}) == 8  # 8 distinct views


def test_threshold_auto_uses_the_stored_cutoffs_and_a_value_overrides(folds: dict, tmp_path: Path) -> None:
    state = torch.load(folds["runs"][0] / "best.pt", weights_only=True)
    stored = state["meta"]["threshold"]
    assert len(stored) == 5 and stored == sorted(stored)
    metrics = pd.read_csv(folds["runs"][0] / "metrics.csv")  # the validation row reports both QWKs
    assert {"qwk", "qwk_fixed", "cutoff_1", "cutoff_5"} <= set(metrics.columns)
    assert stored == [metrics[f"cutoff_{k}"].iloc[-1] for k in range(1, 6)]
    state["meta"]["threshold"] = [10.0, 11.0, 12.0, 13.0, 14.0]  # nothing reaches them: every grade 0
    torch.save(state, tmp_path / "high.pt")
    common = ["panda", "predict", "--checkpoint", str(tmp_path / "high.pt"), "--data", str(folds["root"] / "data"),
              "--device", "cpu"]
    _ok([*common, "--out", str(tmp_path / "auto")])
    assert (pd.read_csv(tmp_path / "auto" / "submission.csv")["isup_grade"] == 0).all()
    _ok([*common, "--out", str(tmp_path / "low"), "--threshold=-5,-4,-3,-2,-1"])  # every score reaches all: 5
    assert (pd.read_csv(tmp_path / "low" / "submission.csv")["isup_grade"] == 5).all()
    assert "expected 5 ascending ordinal cut-offs" in _error([*common, "--out", str(tmp_path / "bad"),
                                                              "--threshold", "1.5"])


def test_tuned_cutoffs_recover_shifted_grades_and_never_lose_to_rounding() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, 300)
    truth = apply_cutoffs(scores, [0.9, 1.7, 2.2, 3.8, 4.1])
    cutoffs, tuned = tune_cutoffs(scores, truth)
    assert tuned == pytest.approx(1.0) and own_qwk(truth, apply_cutoffs(scores, FIXED)) < 0.95
    assert np.array_equal(apply_cutoffs(scores, cutoffs), truth)
    for seed in range(5):  # noisy scores: the tuned QWK is at least the rounded one's, and it is what it says
        noisy = np.clip(truth + np.random.default_rng(seed).normal(0, 0.8, len(truth)), 0, 5)
        cutoffs, tuned = tune_cutoffs(noisy, truth)
        assert tuned >= own_qwk(truth, apply_cutoffs(noisy, FIXED)) - 1e-12
        assert tuned == pytest.approx(own_qwk(truth, apply_cutoffs(noisy, cutoffs)))
        assert cutoffs == sorted(cutoffs)


def test_groups_stay_on_one_side_of_every_fold(folds: dict, tmp_path: Path) -> None:
    root = folds["root"]
    ids = sorted(pd.read_csv(root / "data" / "train.csv")["image_id"])
    groups = tmp_path / "groups.csv"  # three groups of three "serial sections"
    groups.write_text("image_id,group\n" + "".join(f"{i},g{n % 3}\n" for n, i in enumerate(ids)))
    sides = []
    for k in range(3):
        config = TrainConfig(out=tmp_path / f"r{k}", n_folds=3, fold=k, seed=0, device="cpu")
        trainer = PandaTrainer(config, PandaOptions(cache=root / "tiles", arch="resnet18", pretrained=False,
                                                    groups=groups))
        val = set(trainer.val_frame["image_id"])
        assert len(val) == 3 and len({ids.index(i) % 3 for i in val}) == 1  # one whole group
        sides.append(val)
    assert set().union(*sides) == set(ids)
    groups.write_text("image_id,group\n../x,g0\n")
    with pytest.raises(Exception, match="image_id"):
        PandaTrainer(TrainConfig(out=tmp_path / "bad", device="cpu"),
                     PandaOptions(cache=root / "tiles", arch="resnet18", pretrained=False, groups=groups))


def test_clean_drops_exactly_the_slides_the_rule_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = ["".join(f"{b:02x}" for b in rng.integers(0, 256, 16)) for _ in range(40)]
    providers = ["radboud" if i % 2 else "karolinska" for i in range(40)]
    isup = rng.integers(0, 6, 40)
    score = np.clip(isup + rng.normal(0, 1.2, 40), 0, 5).round(3)
    score[0], isup[0], providers[0] = 1.3, 0, "radboud"  # exactly at the threshold: kept (strictly greater drops)
    data = tmp_path / "data"
    data.mkdir()
    gleason = {0: "negative", 1: "3+3", 2: "3+4", 3: "4+3", 4: "4+4", 5: "5+5"}
    pd.DataFrame({"image_id": ids, "data_provider": providers, "isup_grade": isup,
                  "gleason_score": [gleason[g] for g in isup]}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"id": ids, "fold": 0, "provider": providers, "isup": isup, "score": score,
                  "pred": 0}).to_csv(tmp_path / "oof.csv", index=False)
    table = {"radboud": [1.3, 0.8, 0.8, 0.8, 0.8, 1.3], "karolinska": [1.5, 1, 1, 1, 1, 1.5]}
    expected = {i for i, p, g, s in zip(ids, providers, isup, score) if abs(g - s) > table[p][g]}
    assert 0 < len(expected) < 40 and ids[0] not in expected
    _ok(["panda", "clean", "--oof", str(tmp_path / "oof.csv"), "--data", str(data), "--out", str(tmp_path / "pnd")])
    dropped = pd.read_csv(tmp_path / "pnd" / "dropped.csv", dtype={"image_id": str})
    assert set(dropped["image_id"]) == expected
    assert list(dropped.columns) == ["image_id", "provider", "isup", "oof", "diff", "threshold", "reason"]
    kept = pd.read_csv(tmp_path / "pnd" / "train.csv", dtype={"image_id": str})
    assert set(kept["image_id"]) == set(ids) - expected and list(kept.columns)[:4] == ["image_id", "data_provider",
                                                                                        "isup_grade", "gleason_score"]
    _ok(["panda", "clean", "--oof", str(tmp_path / "oof.csv"), "--data", str(data), "--out", str(tmp_path / "fix"),
         "--rule", "fixed", "--max-diff", "1.6"])
    fixed = pd.read_csv(tmp_path / "fix" / "dropped.csv", dtype={"image_id": str})
    assert set(fixed["image_id"]) == {i for i, g, s in zip(ids, isup, score) if abs(g - s) > 1.6}
    assert "--rule fixed needs --max-diff" in _error(["panda", "clean", "--oof", str(tmp_path / "oof.csv"), "--data",
                                                      str(data), "--rule", "fixed", "--out", str(tmp_path / "z")])
