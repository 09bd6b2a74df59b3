"""train.csv / test.csv parsing and the Gleason → ISUP table, on the real file too."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchallenge.cli import app
from medchallenge.core.errors import DataError
from medchallenge.panda.data import gleason_to_isup, read_test_csv, read_train_csv

X, Y = "0123456789abcdef" * 2, "f" * 32


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
        read_train_csv(_csv(tmp_path / "a.csv", f"image_id,data_provider,isup_grade\n{X},radboud,0\n"))
    with pytest.raises(DataError, match="row 2: unknown data_provider 'leiden'"):
        read_train_csv(_csv(tmp_path / "b.csv", header + f"{X},leiden,0,negative\n"))
    with pytest.raises(DataError, match="row 3: isup_grade '7'"):
        read_train_csv(_csv(tmp_path / "c.csv", header + f"{X},radboud,0,negative\n{Y},radboud,7,5+5\n"))
    with pytest.raises(DataError, match=f"row 3: duplicate image_id {X}"):
        read_train_csv(_csv(tmp_path / "d.csv", header + f"{X},radboud,0,negative\n{X},radboud,0,negative\n"))
    with pytest.raises(DataError, match="missing column"):
        read_test_csv(_csv(tmp_path / "e.csv", f"image_id\n{X}\n"))


@pytest.mark.parametrize("bad", ["../../evil/x", "/etc/passwd", "x", X.upper(), X[:31], X + "0", f" {X}", "..", "a\\b"])
def test_ids_that_are_not_panda_ids_are_refused(tmp_path: Path, bad: str) -> None:
    header = "image_id,data_provider,isup_grade,gleason_score\n"
    train = _csv(tmp_path / "train.csv", header + f"{X},radboud,0,negative\n\"{bad}\",karolinska,0,0+0\n")
    with pytest.raises(DataError, match=r"train\.csv: row 3: image_id ") as err:
        read_train_csv(train)
    assert "plain names" in str(err.value)
    test = _csv(tmp_path / "test.csv", f"image_id,data_provider\n{Y},radboud\n\"{bad}\",karolinska\n")
    with pytest.raises(DataError, match=r"test\.csv: row 3: image_id "):
        read_test_csv(test)


def test_real_ids_pass(realdata: Path) -> None:
    """All 10,616 real ids are 32 lowercase hex and pass the check the reader makes."""
    frame = read_train_csv(realdata / "panda/train.csv")
    assert frame["image_id"].str.fullmatch(r"[0-9a-f]{32}").all() and len(frame) == 10616


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_tile_refuses_a_path_as_image_id(tmp_path: Path, runner) -> None:  # noqa: ANN001
    """`panda tile` on a train.csv whose image_id is ../../evil/x: exit 2 naming the file and row,
    nothing written anywhere (before the check, it wrote work/evil/x.npz beside the cache)."""
    from medchallenge.panda.sample import write_sample_dataset

    data = tmp_path / "data"
    write_sample_dataset(data, n_slides=4, size=256, test_fraction=0.25)
    first = (data / "train.csv").read_text().splitlines()[1]
    image_id = first.split(",")[0]
    # the slide the evil id points at exists (data/train_images/../../evil/x.tiff), so only the check stops it
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "x.tiff").write_bytes((data / "train_images" / f"{image_id}.tiff").read_bytes())
    lines = (data / "train.csv").read_text().splitlines()
    lines.insert(2, first.replace(image_id, "../../evil/x"))
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    before = _files(tmp_path)
    out = tmp_path / "work" / "tiles"
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--cache", str(out), "--n-tiles", "4",
                                 "--tile-size", "32"])
    assert result.exit_code == 2, result.output
    assert f"{data / 'train.csv'}: row 3: image_id '../../evil/x'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "work" / "evil").exists()
    assert _files(tmp_path) == before  # nothing written, inside the output folder or outside it
