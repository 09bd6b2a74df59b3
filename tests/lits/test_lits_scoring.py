"""LiTS evaluate against the official scoring program's rules, re-implemented here from
PatrickChrist/lits-challenge-scoring program/evaluate.py (not from the project's code).

The official loop, per reference volume ``ref`` and submission ``sub`` (both cast to int8):
``liver_prediction_exists = np.any(sub == 1)``; lesion per-case Dice is 1 when neither has label 2,
else medpy ``dc(sub == 2, ref == 2)``; liver per-case Dice is ``dc(sub >= 1, ref >= 1)`` when a
liver prediction exists, else 0; the global Dice sums I and S over volumes, and for a volume
without liver prediction adds only ``count(ref >= 1)`` to the liver S. medpy's ``dc`` is 0 when
both masks are empty (its ZeroDivisionError branch). A missing submission volume stops the program.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import Geometry, write_volume
from medchallenge.lits.metrics import LitsScores, lits_case_score


def _medpy_dc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    inter = np.count_nonzero(a & b)
    size = np.count_nonzero(a) + np.count_nonzero(b)
    try:
        return 2.0 * inter / float(size)
    except ZeroDivisionError:
        return 0.0


def official(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | None]:
    """The official program's four Dice numbers over (submission, reference) pairs; None = it fails."""
    per_case: dict[str, list[float]] = {"lesion": [], "liver": []}
    glob = {"lesion": {"I": 0, "S": 0}, "liver": {"I": 0, "S": 0}}
    for sub, ref in pairs:
        sub, ref = sub.astype(np.int8), ref.astype(np.int8)
        pred_lesion, true_lesion = sub == 2, ref == 2
        pred_liver, true_liver = sub >= 1, ref >= 1
        liver_prediction_exists = np.any(sub == 1)
        if not np.any(pred_lesion) and not np.any(true_lesion):
            per_case["lesion"].append(1.0)
        else:
            per_case["lesion"].append(_medpy_dc(pred_lesion, true_lesion))
        per_case["liver"].append(_medpy_dc(pred_liver, true_liver) if liver_prediction_exists else 0.0)
        glob["lesion"]["I"] += np.count_nonzero(pred_lesion & true_lesion)
        glob["lesion"]["S"] += np.count_nonzero(pred_lesion) + np.count_nonzero(true_lesion)
        if liver_prediction_exists:
            glob["liver"]["I"] += np.count_nonzero(pred_liver & true_liver)
            glob["liver"]["S"] += np.count_nonzero(pred_liver) + np.count_nonzero(true_liver)
        else:
            glob["liver"]["S"] += np.count_nonzero(true_liver)
    out: dict[str, float | None] = {}
    for ours, theirs in (("liver", "liver"), ("tumor", "lesion")):
        out[f"{ours}_dice_per_case"] = float(np.mean(per_case[theirs]))
        s = glob[theirs]["S"]
        out[f"{ours}_dice_global"] = 2.0 * glob[theirs]["I"] / s if s else None  # ZeroDivisionError there
    return out


def ours(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | None]:
    scores = LitsScores()
    for sub, ref in pairs:
        scores.add(lits_case_score(sub, ref))
    return {k: (None if v != v else v) for k, v in scores.summary().items()}


def test_tumour_label_over_the_liver_is_no_liver_prediction() -> None:
    # truth liver + tumour, prediction all tumour: no voxel labelled 1 → official liver Dice 0
    pair = (np.array([2, 2]), np.array([1, 2]))
    assert official([pair])["liver_dice_per_case"] == 0.0
    assert lits_case_score(*pair).liver_dice == 0.0
    assert lits_case_score(*pair).tumor_dice == pytest.approx(2 / 3)


def test_no_liver_anywhere_scores_zero_not_one() -> None:
    pair = (np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    assert official([pair])["liver_dice_per_case"] == 0.0
    score = lits_case_score(*pair)
    assert (score.liver_dice, score.tumor_dice) == (0.0, 1.0)  # no tumour on either side: 1
    assert ours([pair])["liver_dice_global"] is None and ours([pair])["tumor_dice_global"] is None


def test_global_liver_pools_only_the_truth_of_a_case_without_liver_prediction() -> None:
    a = (np.array([2, 2, 0, 0]), np.array([1, 1, 2, 0]))  # no label 1 predicted: adds S = 3, I = 0
    b = (np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]))  # I = 2, S = 3 + 2
    assert official([a, b])["liver_dice_global"] == pytest.approx(0.5)
    assert ours([a, b]) == pytest.approx(official([a, b]))
    assert ours([a, b])["liver_dice_per_case"] == pytest.approx((0 + 0.8) / 2)


def test_random_volumes_match_the_official_rules() -> None:
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(40):
        ref = rng.choice(3, size=(3, 5, 4), p=[0.5, 0.35, 0.15]).astype(np.uint8)
        sub = rng.choice(3, size=(3, 5, 4), p=[0.5, 0.3, 0.2]).astype(np.uint8)
        if k % 4 == 0:
            sub[sub == 1] = 2  # no liver label predicted
        if k % 5 == 0:
            ref[ref == 2] = 1  # no tumour in the truth
            sub[sub == 2] = 0 if k % 10 == 0 else 2
        if k % 7 == 0:
            ref[:] = 0
        pairs.append((sub, ref))
    expected = official(pairs)
    assert ours(pairs) == pytest.approx(expected)
    for pair in pairs:  # per case too
        one = official([pair])
        score = lits_case_score(*pair)
        assert (score.liver_dice, score.tumor_dice) == pytest.approx((one["liver_dice_per_case"],
                                                                       one["tumor_dice_per_case"]))


GEOMETRY = Geometry((4, 3, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _write(path: Path, labels: list[int]) -> None:
    write_volume(path, np.array(labels, np.uint8).reshape(2, 3, 4), GEOMETRY, compress=False)


def _evaluate(pred: Path, truth: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["lits", "evaluate", "--predictions", str(pred), "--truth", str(truth), "--json"])
    return result.exit_code, result.output


def test_evaluate_files_as_the_official_program(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pairs = {}
    for name in ("segmentation-0", "segmentation-3", "test-segmentation-0", "test-segmentation-7"):
        ref, sub = rng.choice(3, 24).tolist(), rng.choice([0, 2], 24).tolist()  # no label 1 predicted
        if name == "segmentation-3":
            sub = rng.choice(3, 24).tolist()
        _write(tmp_path / "truth" / f"{name}.nii", ref)
        _write(tmp_path / "pred" / f"{name}.nii", sub)
        pairs[name] = (np.array(sub), np.array(ref))
    _write(tmp_path / "pred" / "segmentation-9.nii", [1] * 24)  # no truth: not scored (as officially)
    code, output = _evaluate(tmp_path / "pred", tmp_path / "truth")
    assert code == 0, output
    metrics = json.loads(output)
    expected = official(list(pairs.values()))
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["n"] == 4
    assert [r["case"] for r in metrics["cases"]] == ["segmentation-0", "segmentation-3", "test-segmentation-0",
                                                     "test-segmentation-7"]


def test_undefined_global_dice_is_null(tmp_path: Path) -> None:
    _write(tmp_path / "truth" / "segmentation-0.nii", [0] * 12 + [1] * 12)
    _write(tmp_path / "pred" / "segmentation-0.nii", [0] * 12 + [1] * 12)
    code, output = _evaluate(tmp_path / "pred", tmp_path / "truth")
    assert code == 0, output
    assert "NaN" not in output
    metrics = json.loads(output)
    assert metrics["tumor_dice_global"] is None and metrics["tumor_dice_per_case"] == 1.0
    assert metrics["liver_dice_global"] == 1.0


def test_missing_prediction_is_an_error_naming_it(tmp_path: Path) -> None:
    for n in (0, 1, 2):
        _write(tmp_path / "truth" / f"segmentation-{n}.nii", [1] * 24)
    for n in (0, 2):
        _write(tmp_path / "pred" / f"segmentation-{n}.nii", [1] * 24)
    code, output = _evaluate(tmp_path / "pred", tmp_path / "truth")
    assert code == 2 and "segmentation-1" in output and "missing" in output, output


def test_labels_outside_lits_are_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "truth" / "segmentation-0.nii", [1] * 24)
    _write(tmp_path / "pred" / "segmentation-0.nii", [1] * 23 + [3])
    code, output = _evaluate(tmp_path / "pred", tmp_path / "truth")
    assert code == 2 and "segmentation-0.nii" in output and "[3]" in output, output
