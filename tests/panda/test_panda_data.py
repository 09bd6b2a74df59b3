"""train.csv / test.csv parsing and the Gleason → ISUP table, on the real file too."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchallenge.core.errors import DataError
from medchallenge.panda.data import gleason_to_isup, read_test_csv, read_train_csv


def test_gleason_table() -> None:
    assert gleason_to_isup("negative") == 0 and gleason_to_isup("0+0") == 0
    assert [gleason_to_isup(s) for s in ("3+3", "3+4", "4+3", "4+4", "3+5", "5+3", "4+5", "5+4", "5+5")] == [
        1, 2, 3, 4, 4, 4, 5, 5, 5]
    with pytest.raises(ValueError):
        gleason_to_isup("6+6")


def test_real_train_csv(realdata: Path) -> None:
    frame = read_train_csv(realdata / "panda/train.csv")
    assert len(frame) == 10616
    assert frame.attrs["inconsistent"] == ["b0a92a74cb53899311acc30b7405e101"]
    assert set(frame["data_provider"]) == {"radboud", "karolinska"}
    assert frame["isup_grade"].between(0, 5).all()


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_train_csv(tmp_path: Path) -> None:
    header = "image_id,data_provider,isup_grade,gleason_score\n"
    with pytest.raises(DataError, match="missing column"):
        read_train_csv(_csv(tmp_path / "a.csv", "image_id,data_provider,isup_grade\nx,radboud,0\n"))
    with pytest.raises(DataError, match="row 2: unknown data_provider 'leiden'"):
        read_train_csv(_csv(tmp_path / "b.csv", header + "x,leiden,0,negative\n"))
    with pytest.raises(DataError, match="row 3: isup_grade '7'"):
        read_train_csv(_csv(tmp_path / "c.csv", header + "x,radboud,0,negative\ny,radboud,7,5+5\n"))
    with pytest.raises(DataError, match="duplicate image_id x"):
        read_train_csv(_csv(tmp_path / "d.csv", header + "x,radboud,0,negative\nx,radboud,0,negative\n"))
    with pytest.raises(DataError, match="missing column"):
        read_test_csv(_csv(tmp_path / "e.csv", "image_id\nx\n"))
