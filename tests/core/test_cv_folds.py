"""Folds, out-of-fold predictions, ``cv``, ensembles, TTA views and tuned thresholds (issue 14's core)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medchallenge.core.checkpoint import expand_checkpoints, load_models, save_checkpoint
from medchallenge.core.cv import cross_validate
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.inference import dihedral, mean_probabilities, undo_dihedral
from medchallenge.core.registry import Registry
from medchallenge.core.splits import case_split
from medchallenge.core.thresholds import best_threshold, resolve_threshold

# ---------------------------------------------------------------- splits


def _items() -> tuple[list[str], list[int]]:
    """31 items of 13 patients (1-4 items each), a binary label per patient."""
    rng = np.random.default_rng(5)
    groups, strata = [], []
    for p in range(13):
        for _ in range(int(rng.integers(1, 5))):
            groups.append(f"P{p:02d}")
            strata.append(p % 3 == 0)
    return groups, strata


def test_folds_cover_every_item_once_and_never_split_a_patient() -> None:
    groups, strata = _items()
    seen = np.zeros(len(groups), dtype=int)
    for fold in range(4):
        train, val = case_split(groups, strata, 0.2, 4, fold, seed=7)
        assert set(train).isdisjoint(val) and len(train) + len(val) == len(groups)
        seen[val] += 1
        assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val})
        # stratified: each validation fold holds a positive and a negative patient
        assert len({strata[i] for i in val}) == 2
    assert (seen == 1).all()
    again = case_split(groups, strata, 0.2, 4, 2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(again, case_split(groups, strata, 0.2, 4, 2, seed=7)))
    other = case_split(groups, strata, 0.2, 4, 2, seed=8)[1]
    assert not np.array_equal(again[1], other)  # the seed decides the split


def test_single_split_is_grouped_and_too_few_groups_is_an_option_error() -> None:
    groups, strata = _items()
    train, val = case_split(groups, strata, 0.25, None, 0, seed=0)
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val}) and len(val) > 0
    with pytest.raises(OptionError, match="--n-folds 20"):
        case_split(groups, strata, 0.2, 20, 0, seed=0)


# ------------------------------------------------- folds through the engine


def _fold_trainer():
    from test_engine import ToyTrainer, _data

    class Folded(ToyTrainer):
        """Items are 64 points of 16 'patients' (4 each); validation is the held-out patients."""

        def train_dataset(self):
            x, y = _data().tensors
            groups = [f"P{i // 4:02d}" for i in range(len(y))]
            self.train_idx, self.val_idx = self.split_items(groups, y.tolist(), 0.25)
            self.groups = groups
            return torch.utils.data.TensorDataset(x[self.train_idx], y[self.train_idx])

        def validate(self, model):
            x, y = _data().tensors
            x, y = x[self.val_idx], y[self.val_idx]
            return {"accuracy": float((model(x).argmax(1) == y).float().mean())}

        def oof_rows(self, model):
            x, y = _data().tensors
            p = torch.softmax(model(x[self.val_idx]), 1)[:, 1]
            return [{"id": f"item{i}", "truth": int(y[i]), "probability": float(q)} for i, q in zip(self.val_idx, p)]

    return Folded


def _accuracy(frame: pd.DataFrame) -> dict[str, float]:
    return {"accuracy": float(((frame["probability"] >= 0.5) == (frame["truth"] == 1)).mean()), "n_rows": len(frame)}


def test_fold_runs_write_split_and_oof_and_cv_pools_them(tmp_path: Path) -> None:
    from test_engine import _config

    Folded = _fold_trainer()
    runs = []
    for fold in range(3):
        run = tmp_path / f"fold{fold}"
        Folded(_config(run, epochs=1, n_folds=3, fold=fold)).fit()
        runs.append(run)
        split = json.loads((run / "split.json").read_text())
        assert (split["n_folds"], split["fold"], split["seed"]) == (3, fold, 3)
        assert set(split["train"]).isdisjoint(split["val"]) and len(split["train"]) + len(split["val"]) == 16
        oof = pd.read_csv(run / "oof.csv")
        assert list(oof.columns[:2]) == ["id", "fold"] and (oof["fold"] == fold).all()
    vals = [set(json.loads((r / "split.json").read_text())["val"]) for r in runs]
    assert set.union(*vals) == {f"P{i:02d}" for i in range(16)} and sum(map(len, vals)) == 16
    report = cross_validate([tmp_path], "toy", _accuracy)  # a folder of fold runs
    pooled = pd.concat([pd.read_csv(r / "oof.csv") for r in runs])
    direct = float(((pooled["probability"] >= 0.5) == (pooled["truth"] == 1)).mean())
    assert report.score == pytest.approx(direct) and report.n == 64
    per_fold = [_accuracy(pd.read_csv(r / "oof.csv"))["accuracy"] for r in runs]
    assert report.summary["fold_mean"] == pytest.approx(np.mean(per_fold))
    assert report.summary["fold_sd"] == pytest.approx(np.std(per_fold, ddof=1))
    assert report.summary["n_rows"] == 64 and report.summary["missing_folds"] == []


def _fake_run(root: Path, name: str, fold: int, ids: list[str], n_folds: int = 3, seed: int = 0,
              challenge: str = "toy") -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"challenge": challenge, "n_folds": n_folds, "fold": fold,
                                                 "seed": seed}))
    pd.DataFrame({"id": ids, "fold": fold, "truth": [1, 0] * (len(ids) // 2),
                  "probability": [0.9, 0.4] * (len(ids) // 2)}).to_csv(run / "oof.csv", index=False)
    return run


def test_cv_refuses_folds_that_do_not_form_one_split(tmp_path: Path) -> None:
    a = _fake_run(tmp_path, "a", 0, ["1", "2"])
    with pytest.raises(OptionError, match="fold 0 given twice"):
        cross_validate([a, _fake_run(tmp_path, "b", 0, ["3", "4"])], "toy", _accuracy)
    with pytest.raises(OptionError, match="folds of different splits"):
        cross_validate([a, _fake_run(tmp_path, "c", 1, ["3", "4"], seed=1)], "toy", _accuracy)
    with pytest.raises(DataError, match="case 2 is also in"):
        cross_validate([a, _fake_run(tmp_path, "d", 1, ["2", "5"])], "toy", _accuracy)
    with pytest.raises(DataError, match="expected 'toy'"):
        cross_validate([_fake_run(tmp_path, "e", 1, ["7", "8"], challenge="kits")], "toy", _accuracy)
    (a / "oof.csv").unlink()
    with pytest.raises(DataError, match="oof.csv"):
        cross_validate([a], "toy", _accuracy)


def test_cv_of_hand_made_oof_files_equals_the_metric_on_the_pooled_rows(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path, f"r{k}", k, [f"{k}{i}" for i in range(4)]) for k in range(2)]
    report = cross_validate(runs, "toy", _accuracy)
    assert report.score == 1.0 and report.n == 8 and report.summary["missing_folds"] == [2]


# ---------------------------------------------------------------- ensembles

REG = Registry("toy")


@REG.register("lin")
def _lin(width: int = 3) -> nn.Module:
    return nn.Linear(4, width)


def _save(path: Path, seed: int, meta: dict) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, {"challenge": "toy", "model": {"name": "lin", "kwargs": {}},
                           "state_dict": _lin().state_dict(), "meta": meta})
    return path


def test_load_models_refuses_mismatched_meta_and_expands_cv_folders(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", 0, {"classes": [0, 1, 2]})
    b = _save(tmp_path / "b.pt", 1, {"classes": [0, 1]})
    assert len(load_models([a, a], REG, challenge="toy", same_meta=("classes",))) == 2
    with pytest.raises(DataError, match="meta 'classes'"):
        load_models([a, b], REG, challenge="toy", same_meta=("classes",))
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "metrics.json").write_text(json.dumps({"runs": [str(tmp_path / "r0"), str(tmp_path / "r1")]}))
    assert expand_checkpoints([cv, a]) == [tmp_path / "r0" / "best.pt", tmp_path / "r1" / "best.pt", a]


def test_ensemble_of_one_model_twice_equals_the_model_and_two_models_differ(tmp_path: Path) -> None:
    (m1, _), (m2, _) = load_models([_save(tmp_path / "a.pt", 0, {}), _save(tmp_path / "b.pt", 1, {})], REG,
                                   challenge="toy")
    x = torch.randn(5, 4)
    single = mean_probabilities([m1], x)
    assert torch.equal(mean_probabilities([m1, m1], x), single)
    both = mean_probabilities([m1, m2], x)
    assert torch.allclose(both, (torch.softmax(m1(x), 1) + torch.softmax(m2(x), 1)) / 2)
    assert not torch.allclose(both, single)


def test_dihedral_views_invert_and_tta_of_an_invariant_model_changes_nothing() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    images = {dihedral(x, k).flatten().tolist().__repr__() for k in range(8)}
    assert len(images) == 8  # eight distinct transforms
    for k in range(8):
        assert torch.equal(undo_dihedral(dihedral(x, k), k), x)
    torch.manual_seed(0)
    head = nn.Linear(3, 4)

    def invariant(batch: torch.Tensor) -> torch.Tensor:  # global average pooling: blind to rotations and flips
        return head(batch.mean(dim=(-2, -1)))

    assert torch.allclose(mean_probabilities(invariant, x, tta=True), mean_probabilities(invariant, x), atol=1e-6)

    def corner(batch: torch.Tensor) -> torch.Tensor:  # looks at one corner: TTA must change it
        return head(batch[..., 0, 0])

    assert not torch.allclose(mean_probabilities(corner, x, tta=True), mean_probabilities(corner, x))


# ---------------------------------------------------------------- thresholds


def _balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    recalls = [np.mean(pred[truth == c] == c) for c in (0, 1) if np.any(truth == c)]
    return float(np.mean(recalls))


def test_best_threshold_equals_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(60) < 0.25).astype(int)
    scores = np.clip(0.7 + 0.2 * truth + rng.normal(0, 0.1, 60), 0, 1)  # every score above 0.5
    t, value = best_threshold(scores, truth, _balanced_accuracy)
    grid = np.linspace(0, 1.01, 2001)
    brute = max(_balanced_accuracy(truth, (scores >= g).astype(int)) for g in grid)
    assert value == pytest.approx(brute)
    assert _balanced_accuracy(truth, (scores >= t).astype(int)) == pytest.approx(value)
    assert value > _balanced_accuracy(truth, (scores >= 0.5).astype(int))  # 0.5 calls everyone positive


def test_resolve_threshold() -> None:
    assert resolve_threshold("auto", {"threshold": 0.31}, "ck.pt") == 0.31
    assert resolve_threshold("0.7", {"threshold": 0.31}, "ck.pt") == 0.7
    assert resolve_threshold("0.5,1.5,2.5", {}, "ck.pt") == [0.5, 1.5, 2.5]
    with pytest.raises(DataError, match="ck.pt: stores no tuned threshold"):
        resolve_threshold("auto", {}, "ck.pt")
    with pytest.raises(OptionError, match="expected auto or a number"):
        resolve_threshold("high", {}, "ck.pt")
