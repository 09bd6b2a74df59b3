"""Lymphocytosis runs (issues 13 and 14): predictions that know their checkpoint, TensorBoard previews,
validation progress in batch logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core import console

TRAIN = ["--no-pretrained", "--epochs", "1", "--device", "cpu", "--workers", "0", "--batch-size", "4"]


def _ok(args: list[str]):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic patients of 2-3 images, cached at a 32 px crop."""
    root = tmp_path_factory.mktemp("lympho-runs")
    _ok(["lympho", "sample", "--out", str(root), "--n-patients", "16", "--min-bag", "2", "--max-bag", "3"])
    _ok(["lympho", "tile", "--data", str(root), "--cache", str(root / "cache"), "--crop", "32"])
    return root


def _train(dataset: Path, name: str, *extra: str) -> Path:
    run = dataset / "runs" / name
    _ok(["lympho", "train", "--cache", str(dataset / "cache"), "--out", str(run), *TRAIN, *extra])
    return run


@pytest.fixture(scope="module")
def two_runs(dataset: Path) -> tuple[Path, Path]:
    """Two clinical-model runs that differ only by their seed."""
    return (_train(dataset, "a", "--model", "clinical", "--seed", "0"),
            _train(dataset, "b", "--model", "clinical", "--seed", "1"))


def test_predictions_know_their_checkpoint(dataset: Path, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "predictions"
    base = ["lympho", "predict", "--data", str(dataset), "--out", str(out), "--device", "cpu", "--scores"]
    _ok([*base, "--checkpoint", str(two_runs[0])])
    first = (out / "submission.csv").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"] == str((two_runs[0] / "best.pt").resolve()) and manifest["options"]["scores"]
    again = _ok([*base, "--checkpoint", str(two_runs[0])])  # same checkpoint and options: nothing redone
    assert "skipped" in again.stderr and (out / "submission.csv").read_text() == first
    other = _ok([*base, "--checkpoint", str(two_runs[1])])  # retrained: redone, and said
    assert "made by another checkpoint" in other.stderr
    assert (out / "submission.csv").read_text() != first  # another model's scores
    assert json.loads((out / "manifest.json").read_text())["sha256"] != manifest["sha256"]
    without = _ok([*base[:-1], "--checkpoint", str(two_runs[1])])  # other options (no Score column): redone
    assert "other options" in without.stderr and "Score" not in (out / "submission.csv").read_text()
    parts = tmp_path / "parts"
    for part in ("1/2", "2/2"):
        _ok([*base[:5], str(parts), "--device", "cpu", "--checkpoint", str(two_runs[0]), "--part", part])
    assert (parts / "submission.csv").is_file()
    (parts / "submission.csv").unlink()
    redo = _ok([*base[:5], str(parts), "--device", "cpu", "--checkpoint", str(two_runs[1]), "--part", "1/2"])
    assert "made by another checkpoint" in redo.stderr and "not merging" in redo.stderr  # part 2/2 is stale
    assert not (parts / "submission.csv").exists()


def test_tensorboard_previews_and_validation_progress(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    tracked: list[str] = []
    original = console.track

    def spy(items, description, total=None):  # type: ignore[no-untyped-def]
        tracked.append(description)
        return original(items, description, total)

    monkeypatch.setattr(console, "track", spy)
    run = _train(dataset, "tb", "--model", "attention", "--tensorboard")
    assert "validation" in tracked  # the whole-set validation reports progress in batch logs
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert {t for t in images if t.startswith("preview/")} and any("(malignant)" in t for t in images), images
    assert any("(reactive)" in t for t in images), images
    assert {"train/loss_step", "balanced_accuracy"} <= set(acc.Tags()["scalars"]), acc.Tags()["scalars"]
    shot = acc.Images([t for t in images if "(malignant)" in t][0])[0]
    assert shot.width >= 2 * 96 and shot.height == 96 + 14  # 2-3 images of 32 px enlarged to 96, captioned


# ------------------------------------------------------------------ issue 14: folds, cv, ensembles, TTA, thresholds
def _labelled(dataset: Path) -> set[str]:
    import pandas as pd

    index = pd.read_csv(dataset / "cache" / "index.csv", dtype={"ID": str})
    return set(index.loc[index["LABEL"] >= 0, "ID"])


@pytest.fixture(scope="module")
def folds(dataset: Path) -> list[Path]:
    """Folds 0, 1, 2 of --n-folds 3 (clinical model), in their default run folders."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(dataset)
        for k in range(3):
            _ok(["lympho", "train", "--cache", "cache", "--model", "clinical", *TRAIN, "--n-folds", "3", "--fold", str(k)])
    return [next((dataset / "runs").glob(f"clinical-fold{k}-*")) for k in range(3)]


def test_folds_cover_every_patient_once(dataset: Path, folds: list[Path]) -> None:
    import pandas as pd

    seen: list[str] = []
    for k, run in enumerate(folds):
        split = json.loads((run / "split.json").read_text())
        assert (split["n_folds"], split["fold"], split["seed"]) == (3, k, 0)
        assert not set(split["train"]) & set(split["val"]) and set(split["train"]) | set(split["val"]) == _labelled(dataset)
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(split["val"]) and (oof["fold"] == k).all()
        seen += split["val"]
    assert sorted(seen) == sorted(_labelled(dataset))  # every labelled patient validated exactly once


def test_cv_pools_each_fold_at_its_own_threshold(folds: list[Path], tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    import torch

    result = _ok(["lympho", "cv", *map(str, folds), "--out", str(tmp_path / "cv"), "--json"])
    report = json.loads(result.stdout)
    rows = []
    for run in folds:
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        stored = torch.load(run / "best.pt", weights_only=True)["meta"]["threshold"]
        assert (oof["threshold"] == stored).all()  # the threshold tuned on that fold, as best.pt stores it
        rows.append(oof)
    pooled = pd.concat(rows)
    truth, pred = pooled["label"].to_numpy(), (pooled["probability"] >= pooled["threshold"]).to_numpy()
    recalls = [np.mean(pred[truth == c] == c) for c in (0, 1) if (truth == c).any()]  # balanced accuracy by hand
    assert report["score"] == pytest.approx(float(np.mean(recalls)))
    assert report["n"] == len(pooled) and set(report["per_fold"]) == {"0", "1", "2"}
    assert (tmp_path / "cv" / "metrics.json").is_file() and (tmp_path / "cv" / "cases.csv").is_file()


def test_cv_refuses_other_splits_and_a_fold_twice(dataset: Path, folds: list[Path]) -> None:
    other_seed = _train(dataset, "seed1-fold2", "--model", "clinical", "--n-folds", "3", "--fold", "2", "--seed", "1")
    other_n = _train(dataset, "n2-fold2", "--model", "clinical", "--n-folds", "4", "--fold", "2")
    for runs, message in (([folds[0], folds[1], other_seed], "folds of different splits"),
                          ([folds[0], other_n], "folds of different splits"),
                          ([folds[0], folds[0]], "fold 0 given twice")):
        result = CliRunner().invoke(app, ["lympho", "cv", *map(str, runs), "--out", str(dataset / "cv-bad")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def _predict(dataset: Path, out: Path, *args: str) -> str:
    _ok(["lympho", "predict", "--data", str(dataset), "--out", str(out), "--device", "cpu", "--scores", *args])
    return (out / "submission.csv").read_text()


def test_ensembles_average_probabilities(dataset: Path, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    a, b = (["--checkpoint", str(r)] for r in two_runs)
    alone = _predict(dataset, tmp_path / "a", *a)
    assert _predict(dataset, tmp_path / "aa", *a, *a) == alone  # the same checkpoint twice: bitwise the same
    scores = {}
    for name, args in (("a", a), ("b", b), ("ab", a + b)):
        _predict(dataset, tmp_path / name, *args)
        scores[name] = pd.read_csv(tmp_path / name / "submission.csv")["Score"]
    assert not scores["ab"].equals(scores["a"]) and not scores["ab"].equals(scores["b"])
    assert (scores["ab"] - (scores["a"] + scores["b"]) / 2).abs().max() < 2e-6  # the mean of the members


def test_tta_averages_the_eight_dihedral_views(dataset: Path, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    import torch

    from medchallenge.core.checkpoint import load_model
    from medchallenge.lympho.cache import load_image
    from medchallenge.lympho.data import patient_images, read_annotations
    from medchallenge.lympho.models import MODELS
    from medchallenge.lympho.predict import _clinical

    run = _train(dataset, "mean", "--model", "mean")
    plain = pd.read_csv(_write(dataset, tmp_path / "plain", run))
    tta = pd.read_csv(_write(dataset, tmp_path / "tta", run, "--tta"))
    assert not np.allclose(plain["Score"], tta["Score"])
    model, payload = load_model(run / "best.pt", MODELS, challenge="lympho")
    first = read_annotations(dataset / "clinical_annotation.csv").query("LABEL == -1").iloc[[0]]
    images = torch.from_numpy(np.stack([load_image(f, 32) for f in patient_images(dataset, first["ID"].iloc[0], -1)]))
    bags = torch.zeros(len(images), dtype=torch.long)
    clinical = torch.as_tensor(_clinical(first, payload["meta"]), dtype=torch.float32)
    views = []
    with torch.no_grad():
        for k in range(8):  # 4 rotations of each image, each also mirrored left-right
            view = torch.rot90(images, k % 4, dims=(2, 3))
            view = view.flip(3) if k >= 4 else view
            views.append(torch.sigmoid(model(view, bags, clinical)["logit"])[0].item())
    assert tta["Score"].iloc[0] == pytest.approx(np.mean(views), abs=2e-6)


def _write(dataset: Path, out: Path, run: Path, *args: str) -> Path:
    _predict(dataset, out, "--checkpoint", str(run), *args)
    return out / "submission.csv"


def test_threshold_tuned_stored_and_overridden(dataset: Path, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd
    import torch

    run = two_runs[0]
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"balanced_accuracy", "balanced_accuracy_at_0.5", "threshold", "auc"} <= set(metrics.columns)
    stored = torch.load(run / "best.pt", weights_only=True)["meta"]["threshold"]
    assert stored == pytest.approx(metrics["threshold"].iloc[-1])  # one epoch: that epoch's tuned threshold
    auto = pd.read_csv(_write(dataset, tmp_path / "auto", run))
    assert (auto["Predicted"] == (auto["Score"] >= stored).astype(int)).all()
    cut = float(auto["Score"].median())
    fixed = pd.read_csv(_write(dataset, tmp_path / "fixed", run, "--threshold", str(cut)))
    assert (fixed["Predicted"] == (fixed["Score"] >= cut).astype(int)).all() and fixed["Predicted"].sum() >= 1
    bad = CliRunner().invoke(app, ["lympho", "predict", "--checkpoint", str(run), "--data", str(dataset),
                                   "--out", str(tmp_path / "bad"), "--threshold", "high"])
    assert bad.exit_code == 2 and "--threshold high" in bad.output


def test_class_weighting_is_on_by_default(dataset: Path, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from medchallenge.core.engine import TrainConfig
    from medchallenge.lympho.train import LymphoOptions, LymphoTrainer

    assert json.loads((two_runs[0] / "config.json").read_text())["options"]["class_weight"] is True
    config = TrainConfig(out=tmp_path / "run", epochs=1, device="cpu", workers=0)
    trainer = LymphoTrainer(config, LymphoOptions(cache=dataset / "cache", model="clinical", pretrained=False))
    n_pos = int(trainer.train_index["LABEL"].sum())
    assert trainer.pos_weight == pytest.approx((len(trainer.train_index) - n_pos) / n_pos)
    off = LymphoTrainer(config, LymphoOptions(cache=dataset / "cache", model="clinical", pretrained=False,
                                              class_weight=False))
    assert off.pos_weight is None
