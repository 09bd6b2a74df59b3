"""KiTS names that become paths (case folders, prediction and truth files, --cases, index.csv) and
strict JSON for undefined Dice."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import Geometry, write_volume
from medchallenge.kits.data import find_cases
from medchallenge.kits.sample import KITS_DIRECTION, write_sample_dataset

GRID = Geometry((4, 6, 6), (3.0, 0.8, 0.8), (0.0, 0.0, 0.0), KITS_DIRECTION)  # numpy 6×6×4, slices last


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def _case(folder: Path, labels: np.ndarray | None = None) -> None:
    write_volume(folder / "imaging.nii.gz", np.full((6, 6, 4), -1000, np.int16), GRID)
    if labels is not None:
        write_volume(folder / "segmentation.nii.gz", labels.astype(np.uint8), GRID)


@pytest.mark.parametrize("bad", [
    "case_0001",        # four digits
    "case_00001\n",     # trailing newline: `^case_(\\d{5})$` matched it, and the cache file carried it
    "case_٠٠٠٠١",       # Arabic-Indic digits: `\\d` matched them and int() read them as 1
    "case_00001_old",
])
def test_misnamed_case_folder_is_exit_2_naming_it(tmp_path: Path, bad: str) -> None:
    _case(tmp_path / "data" / "case_00000", np.zeros((6, 6, 4)))
    _case(tmp_path / "data" / bad, np.zeros((6, 6, 4)))
    with pytest.raises(DataError, match="case_") as err:
        find_cases(tmp_path)
    assert err.value.path == tmp_path / "data" and repr(bad) in str(err.value)
    code, output = _invoke(["kits", "tile", "--data", str(tmp_path), "--cache", str(tmp_path / "slices")])
    assert code == 2 and f"case folder {bad!r}" in output and output.count("\n") == 1  # one line
    assert not (tmp_path / "slices").exists()  # refused before anything is written


def test_real_and_sample_layouts_fit(tmp_path: Path) -> None:
    """The real data/ folder holds kits.json beside the cases; other folders (not case_…) are ignored."""
    write_sample_dataset(tmp_path, n_cases=3, size=32, seed=0)
    (tmp_path / "data" / "kits.json").write_text("[]")
    (tmp_path / "data" / ".ipynb_checkpoints").mkdir()
    assert [c.case_id for c in find_cases(tmp_path)] == ["case_00000", "case_00001", "case_00210"]
    assert [c.case_id for c in find_cases(tmp_path / "data", [1])] == ["case_00001"]


def test_case_numbers_beyond_five_digits_are_refused(tmp_path: Path) -> None:
    _case(tmp_path / "data" / "case_00000", np.zeros((6, 6, 4)))
    code, output = _invoke(["kits", "tile", "--data", str(tmp_path), "--cases", "100000"])
    assert code == 2 and "case_100000" in output and "--cases" in output


def _truth_and_prediction(tmp_path: Path, truth: np.ndarray, pred: np.ndarray, number: int = 0) -> None:
    _case(tmp_path / "truth" / f"case_{number:05d}", truth)
    write_volume(tmp_path / "pred" / f"prediction_{number:05d}.nii.gz", pred.astype(np.uint8), GRID)


@pytest.mark.parametrize("bad", ["prediction_0.nii.gz", "prediction_00000.nii", "prediction_00000 .nii.gz"])
def test_misnamed_prediction_file_is_exit_2_naming_it(tmp_path: Path, bad: str) -> None:
    labels = np.zeros((6, 6, 4), np.uint8)
    labels[2:4, 2:4, 1:3] = 1
    _truth_and_prediction(tmp_path, labels, labels)
    (tmp_path / "pred" / bad).write_bytes((tmp_path / "pred" / "prediction_00000.nii.gz").read_bytes())
    code, output = _invoke(["kits", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                            str(tmp_path / "truth"), "--out", str(tmp_path / "ev")])
    assert code == 2 and f"prediction file {bad!r}" in output
    assert not (tmp_path / "ev").exists()


def test_misnamed_or_doubled_truth_file_is_exit_2(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    labels = np.zeros((6, 6, 4), np.uint8)
    write_volume(flat / "case_00000.nii.gz", labels, GRID)
    write_volume(flat / "case_1.nii.gz", labels, GRID)
    code, output = _invoke(["kits", "evaluate", "--predictions", str(tmp_path / "p"), "--truth", str(flat)])
    assert code == 2 and "truth file 'case_1.nii.gz'" in output
    (flat / "case_1.nii.gz").rename(flat / "segmentation_00000.nii.gz")
    code, output = _invoke(["kits", "evaluate", "--predictions", str(tmp_path / "p"), "--truth", str(flat)])
    assert code == 2 and "second truth file for case_00000" in output


def test_index_csv_cases_are_checked_before_training(tmp_path: Path) -> None:
    slices = tmp_path / "slices"
    CacheDir(slices, "kits-slices").open_for_writing({"window": [-79.0, 304.0], "mean": 101.0, "std": 76.9})
    (slices / "index.csv").write_text("case,slice,has_kidney,has_tumor,height,width\n"
                                      "case_00000,0,True,False,32,32\n../../x,0,True,False,32,32\n")
    code, output = _invoke(["kits", "train", "--cache", str(slices), "--out", str(tmp_path / "run"),
                            "--device", "cpu", "--patch-size", "32", "--workers", "0"])
    assert code == 2 and "index.csv" in output and "row 3" in output and "../../x" in output
    assert not (tmp_path / "run").exists()


def _starter_code_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """neheller/kits19 starter_code/evaluation.py, as written: numpy integer sums, so an empty-in-both
    region divides 0/0 to NaN (no ZeroDivisionError is raised; its `except` never runs)."""
    with np.errstate(invalid="ignore"):
        tk_pd, tk_gt = np.greater(pred, 0), np.greater(gt, 0)
        tk = 2 * np.logical_and(tk_pd, tk_gt).sum() / (tk_pd.sum() + tk_gt.sum())
        tu_pd, tu_gt = np.greater(pred, 1), np.greater(gt, 1)
        tu = 2 * np.logical_and(tu_pd, tu_gt).sum() / (tu_pd.sum() + tu_gt.sum())
    return float(tk), float(tu)


def _as_json_number(value: float) -> float | None:
    return None if np.isnan(value) else value


def test_undefined_dice_is_null_in_json_and_metrics_json(tmp_path: Path) -> None:
    kidney_only = np.zeros((6, 6, 4), np.uint8)
    kidney_only[1:4, 1:4, 1:3] = 1
    empty = np.zeros_like(kidney_only)
    _truth_and_prediction(tmp_path, kidney_only, kidney_only, 0)  # tumour empty in both: (1, NaN)
    _truth_and_prediction(tmp_path, empty, empty, 1)  # both regions empty in both: (NaN, NaN)
    expected = [_starter_code_dice(kidney_only, kidney_only), _starter_code_dice(empty, empty)]
    assert np.isnan(expected[0][1]) and np.isnan(expected[1]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning (nanmean of all-NaN) would be exit 1
        result = CliRunner().invoke(app, ["kits", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                                          str(tmp_path / "truth"), "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    for summary in (strict(result.stdout), strict((tmp_path / "ev" / "metrics.json").read_text())):
        cases = [(c["kidney_dice"], c["tumor_dice"]) for c in summary["cases"]]
        assert cases == [tuple(_as_json_number(v) for v in pair) for pair in expected] == [(1.0, None), (None, None)]
        assert [c["composite_dice"] for c in summary["cases"]] == [1.0, None]
        # means over the cases where the Dice is defined; none defined for the tumour → null
        assert (summary["kidney_dice"], summary["tumor_dice"], summary["composite_dice"]) == (1.0, None, 1.0)
        assert summary["pixel_accuracy"] == 1.0 and summary["n"] == 2
    cases_csv = pd.read_csv(tmp_path / "ev" / "cases.csv")
    assert cases_csv["tumor_dice"].isna().all() and cases_csv["kidney_dice"].isna().tolist() == [False, True]
