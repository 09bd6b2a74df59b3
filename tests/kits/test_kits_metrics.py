"""KiTS Dice on hand-built volumes and on the real label files against themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medchallenge.core.nifti import read_volume
from medchallenge.kits.metrics import confusion_3x3, score_case, summarise


def test_hand_built_case() -> None:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2, :2] = 1
    truth[0, 0, 0] = 2
    pred = np.zeros_like(truth)
    pred[0, :2, :3] = 1  # kidney region: |P|=6, |T|=4, ∩=4 → 0.8
    score = score_case("c", pred, truth)
    assert score.kidney_dice == pytest.approx(0.8)
    assert score.tumor_dice == pytest.approx(0.0)  # tumour missed
    assert score.pixel_accuracy == pytest.approx(29 / 32)
    assert np.isnan(score_case("e", np.zeros_like(truth), np.zeros_like(truth)).tumor_dice)


def test_swapping_kidney_and_tumour_keeps_kidney_dice() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (4, 8, 8)).astype(np.uint8)
    swapped = truth.copy()
    swapped[truth == 1], swapped[truth == 2] = 2, 1
    score = score_case("s", swapped, truth)
    assert score.kidney_dice == 1.0 and score.tumor_dice < 1.0


def test_summary_skips_nan() -> None:
    truth = np.zeros((1, 2, 2), np.uint8)
    truth[0, 0, 0] = 1
    a = score_case("a", truth, truth)  # tumour NaN
    b = score_case("b", np.zeros_like(truth), truth)
    summary = summarise([a, b])
    assert summary["kidney_dice"] == pytest.approx(0.5) and np.isnan(summary["tumor_dice"])


@pytest.mark.parametrize(("name", "counts"), [
    ("case_00000_segmentation.nii.gz", [159_235_814, 915_679, 18_491]),
    ("case_00061_segmentation.nii.gz", [7_453_957, 124_943, 23_276]),
])
def test_real_labels_against_themselves(realdata: Path, name: str, counts: list[int]) -> None:
    labels = read_volume(realdata / "kits19" / name).array
    score = score_case(name, labels, labels)
    assert (score.kidney_dice, score.tumor_dice) == (1.0, 1.0)
    assert np.diag(confusion_3x3(labels, labels)).tolist() == counts
