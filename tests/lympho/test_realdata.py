"""Real lymphocytosis files: three real patients in the real layout, and the full real CSV.

../shared/realdata/lympho/subset: P62 (malignant), P10 (reactive, DD-MM-YYYY birth date), test
patient P73; 224×224 RGB JPEGs; their rows of clinical_annotation.csv verbatim. Expected values are
computed here from the files themselves (dates, folder listings, PIL decoding), not by the reader.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.lympho.data import patient_images, read_annotations
from medchallenge.lympho.metrics import evaluate_submission

# ID: (label, split folder, birth date, number of JPEGs)
EXPECTED = {"P62": (1, "trainset", date(1928, 9, 29), 16), "P10": (0, "trainset", date(1984, 9, 19), 32),
            "P73": (-1, "testset", date(1923, 6, 21), 26)}


@pytest.fixture(scope="module")
def subset(realdata: Path) -> Path:
    return realdata / "lympho" / "subset"


def test_subset_rows_are_verbatim_rows_of_the_full_csv(subset: Path, realdata: Path) -> None:
    full = (realdata / "lympho" / "clinical_annotation.csv").read_text().splitlines()
    rows = (subset / "clinical_annotation.csv").read_text().splitlines()
    assert rows[0] == full[0] and set(rows[1:]) <= set(full[1:]) and len(rows) == 4


def test_reader_on_real_patients(subset: Path) -> None:
    frame = read_annotations(subset / "clinical_annotation.csv").set_index("ID")
    assert sorted(frame.index) == sorted(EXPECTED)
    for pid, (label, split, born, n_images) in EXPECTED.items():
        row = frame.loc[pid]
        assert row["LABEL"] == label
        assert row["AGE"] == pytest.approx((date(2020, 1, 1) - born).days / 365.25)
        assert (row["BIRTH_YEAR"], row["BIRTH_MONTH"]) == (born.year, born.month)
        files = patient_images(subset, pid, label)
        assert files == sorted((subset / split / pid).glob("*.jpg")) and len(files) == n_images
    assert frame.loc["P10", "AGE"] == pytest.approx(35.28, abs=0.01)  # 19-09-1984 read as day-month-year
    assert frame.loc["P62", "GENDER"] == "M" and frame.loc["P10", "GENDER"] == "F"
    assert frame.loc["P62", "LYMPH_COUNT"] == pytest.approx(2.28)


def test_tile_real_patients(subset: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(subset) for p in subset.rglob("*"))
    cache = tmp_path / "cache"
    args = ["lympho", "tile", "--data", str(subset), "--cache", str(cache), "--crop", "112"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = pd.read_csv(cache / "index.csv", dtype={"ID": str}).set_index("ID")
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["kind"] == "lympho-crops" and meta["settings"]["crop"] == 112
    for pid, (label, split, _, n_images) in EXPECTED.items():
        assert (index.loc[pid, "LABEL"], index.loc[pid, "n_images"]) == (label, n_images)
        stack = np.load(cache / "images" / f"{pid}.npy")
        assert stack.shape == (n_images, 3, 112, 112) and stack.dtype == np.uint8
        first = sorted((subset / split / pid).glob("*.jpg"))[0]
        with Image.open(first) as img:
            assert img.size == (224, 224) and img.mode == "RGB"
            pixels = np.asarray(img)
        np.testing.assert_array_equal(stack[0], pixels[56:168, 56:168].transpose(2, 0, 1))  # the centre crop
    assert sorted(p.relative_to(subset) for p in subset.rglob("*")) == before  # the data folder untouched
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "caching 0 patient(s)" in again.output  # a rerun skips finished patients


def test_evaluate_against_real_truth(subset: Path, tmp_path: Path) -> None:
    """The real CSV as truth: its two labelled patients; the test patient P73 is not scorable."""
    truth = subset / "clinical_annotation.csv"
    sub = tmp_path / "sub.csv"
    sub.write_text("Id,Predicted\nP10,1\nP62,1\n")
    result = evaluate_submission(sub, truth)
    assert result["balanced_accuracy"] == pytest.approx(0.5) and result["confusion_matrix"] == [[0, 1], [0, 1]]
    sub.write_text("Id,Predicted\nP10,0\nP62,1\nP73,1\n")
    out = CliRunner().invoke(app, ["lympho", "evaluate", "--predictions", str(sub), "--truth", str(truth),
                                   "--out", str(tmp_path / "evaluation")])
    assert out.exit_code == 2 and "row 4: Id P73 has no label 0/1" in out.output


def test_full_real_csv_ids_are_plain(realdata: Path) -> None:
    """All 205 real IDs pass the name check (P<number>) and are unique."""
    frame = read_annotations(realdata / "lympho" / "clinical_annotation.csv")
    assert len(frame) == 205 and frame["ID"].str.fullmatch(r"P\d+").all() and frame["ID"].is_unique
