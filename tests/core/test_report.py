"""core.report: every evaluate writes the same files and prints the same strict keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medchallenge import __version__
from medchallenge.core.report import EvaluationReport, write_report


def _strict(text: str) -> dict:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_report_writes_metrics_cases_and_plots(tmp_path: Path) -> None:
    cases = pd.DataFrame({"case": ["a", "b"], "dice": [0.5, float("nan")]})
    drawn = []
    report = EvaluationReport("toy", "Dice", float("nan"), 2, {"dice_a": 0.5}, cases, plots=drawn.append)
    out = write_report(report, tmp_path / "eval")
    assert _strict((out / "metrics.json").read_text()) == {
        "challenge": "toy", "metric": "Dice", "score": None, "n": 2, "version": __version__, "dice_a": 0.5}
    assert pd.read_csv(out / "cases.csv")["case"].tolist() == ["a", "b"]
    assert drawn == [out]


def test_default_out_is_evaluation_in_the_current_folder(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = write_report(EvaluationReport("toy", "F1", 1.0, 1))
    finally:
        os.chdir(cwd)
    assert out == tmp_path / "evaluation" and (out / "metrics.json").is_file()
    assert not (out / "cases.csv").exists()


def test_summary_may_not_shadow_the_common_keys() -> None:
    with pytest.raises(ValueError, match="clash"):
        EvaluationReport("toy", "F1", 1.0, 1, {"score": 0.3}).to_json()
