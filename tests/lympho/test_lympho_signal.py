"""``lympho sample --signal``: how far malignant patients depart from reactive ones (1: the default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.lympho.sample import draw_smear


def test_signal_zero_draws_malignant_cells_as_reactive_ones() -> None:
    same = draw_smear(True, np.random.default_rng(3), size=96, signal=0.0)
    assert np.array_equal(same, draw_smear(False, np.random.default_rng(3), size=96))
    full = draw_smear(True, np.random.default_rng(3), size=96)
    assert np.array_equal(full, draw_smear(True, np.random.default_rng(3), size=96, signal=1.0))
    assert not np.array_equal(full, same)


def _counts(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "clinical_annotation.csv")


def test_signal_scales_the_lymphocyte_count_gap(tmp_path: Path) -> None:
    medians = {}
    for signal in ("1", "0.3"):
        root = tmp_path / signal
        result = CliRunner().invoke(app, ["lympho", "sample", "--out", str(root), "--n-patients", "60", "--min-bag",
                                          "1", "--max-bag", "1", "--signal", signal])
        assert result.exit_code == 0, result.output
        frame = pd.concat([_counts(root).query("LABEL != -1"), pd.read_csv(root / "answers" / "test_labels.csv")])
        medians[signal] = frame.groupby("LABEL")["LYMPH_COUNT"].median()
    ratio_full, ratio_weak = (medians[s][1] / medians[s][0] for s in ("1", "0.3"))
    assert ratio_full > 2.5 and 1.0 < ratio_weak < 2.0, medians  # 30/8 and (30/8)^0.3 = 1.49 in expectation
    bad = CliRunner().invoke(app, ["lympho", "sample", "--out", str(tmp_path / "bad"), "--signal", "1.5"])
    assert bad.exit_code == 2 and "--signal" in bad.output
