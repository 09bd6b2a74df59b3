"""core.names (ids that become paths) and core.jsonio (strict JSON everywhere)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medchallenge.core.errors import DataError
from medchallenge.core.io import write_json
from medchallenge.core.jsonio import dumps_json
from medchallenge.core.names import PANDA_ID, check_name, check_names


@pytest.mark.parametrize(
    "bad",
    ["../../evil/x", "..", ".", "a/b", "a\\b", "/etc/passwd", "C:x", "", " x", "x\n", "a\x00b", "x..y", None, 7],
)
def test_check_name_refuses_anything_but_a_plain_name(bad: object) -> None:
    with pytest.raises(DataError) as err:
        check_name(bad, "train.csv", what="image_id", where="row 4")
    assert str(err.value).startswith("train.csv: row 4: image_id ")


@pytest.mark.parametrize("good", ["case_00000", "volume-0", "P62", "001.tiff", "BraTS-GLI-00000-000", "a.b"])
def test_check_name_keeps_plain_names(good: str) -> None:
    assert check_name(good, "x.csv") == good


def test_check_names_reports_the_csv_row_and_pattern() -> None:
    ids = ["0005f7aaab2800f6170c399693a96917", "../../evil/x"]
    with pytest.raises(DataError, match=r"train\.csv: row 3: image_id '\.\./\.\./evil/x'"):
        check_names(ids, "train.csv", what="image_id", pattern=PANDA_ID)
    with pytest.raises(DataError, match="does not match the expected pattern"):
        check_names(["0005F7AAAB2800F6170C399693A96917"], "train.csv", what="image_id", pattern=PANDA_ID)


def test_real_panda_ids_match_the_pattern(realdata) -> None:
    import pandas as pd

    ids = pd.read_csv(realdata / "panda" / "train.csv")["image_id"].tolist()
    assert len(check_names(ids, "train.csv", what="image_id", pattern=PANDA_ID)) == 10_616


def test_strict_json_writes_null_for_undefined_numbers(tmp_path) -> None:
    obj = {"qwk": float("nan"), "inf": -math.inf, "np": np.float32(0.5), "arr": np.array([1.0, np.nan]),
           "int": np.int64(3), "nested": [{"x": np.float64("nan")}], "path": tmp_path}
    text = dumps_json(obj)
    assert "NaN" not in text and "Infinity" not in text
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert parsed == {"qwk": None, "inf": None, "np": 0.5, "arr": [1.0, None], "int": 3,
                      "nested": [{"x": None}], "path": str(tmp_path)}
    write_json(tmp_path / "metrics.json", obj)
    on_disk = (tmp_path / "metrics.json").read_text()
    assert json.loads(on_disk, parse_constant=lambda c: pytest.fail(c))["qwk"] is None


def test_data_error_stays_one_line_for_a_path_with_a_newline() -> None:
    err = DataError("data/case_00001\n", "not a case folder")
    assert "\n" not in str(err) and str(err) == "'data/case_00001\\n': not a case folder"
    assert str(DataError("data/case_00001", "x")) == "data/case_00001: x"
