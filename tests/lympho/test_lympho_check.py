"""``lympho check``: the real files, every known bad input (file and problem named), strict JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.lympho.sample import write_sample_dataset


def _check(data: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["lympho", "check", "--data", str(data), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def test_real_subset_is_clean(realdata: Path) -> None:
    """Three real patients (P62, P10, P73): 16 + 32 + 26 JPEGs of 224×224, exit 0, no problems."""
    code, report = _check(realdata / "lympho" / "subset")
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert report["counts"] == {"rows in clinical_annotation.csv": 3, "malignant (LABEL 1)": 1, "reactive (LABEL 0)": 1,
                                "test (LABEL -1)": 1, "images in trainset/": 48, "images in testset/": 26}
    ranges = report["ranges"]
    assert ranges["bag size (images per patient)"] == [16, 32]
    assert ranges["image width (px)"] == [224, 224] and ranges["image height (px)"] == [224, 224]
    assert ranges["age (years)"] == [35.28, 96.53]  # P10 born 19-09-1984 (DD-MM-YYYY), P73 21 June 1923
    assert ranges["lymphocyte count (10⁹/L)"][0] == 2.28


def test_full_real_csv_with_the_three_real_folders(realdata: Path, tmp_path: Path) -> None:
    """All 205 real rows parse (113/50/42); the 202 patients without images are each named, exit 2."""
    shutil.copy(realdata / "lympho" / "clinical_annotation.csv", tmp_path / "clinical_annotation.csv")
    for split in ("trainset", "testset"):
        (tmp_path / split).mkdir()
        for folder in (realdata / "lympho" / "subset" / split).iterdir():
            (tmp_path / split / folder.name).symlink_to(folder)
    code, report = _check(tmp_path)
    assert code == 2 and report["ok"] is False
    assert report["counts"]["rows in clinical_annotation.csv"] == 205
    assert (report["counts"]["malignant (LABEL 1)"], report["counts"]["reactive (LABEL 0)"],
            report["counts"]["test (LABEL -1)"]) == (113, 50, 42)
    assert report["counts"]["images in trainset/"] == 48 and report["counts"]["images in testset/"] == 26
    assert len(report["problems"]) == 202
    assert all("no image folder for patient" in p["problem"] and p["blocking"] for p in report["problems"])
    assert not any(p["path"].endswith(("/P62", "/P10", "/P73")) for p in report["problems"])


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """8 synthetic patients of 2-3 images; the CSV's header row and its first data row name P1."""
    write_sample_dataset(tmp_path / "data", n_patients=8, seed=0, min_images=2, max_images=3)
    return tmp_path / "data"


def _rows(data: Path) -> list[str]:
    return (data / "clinical_annotation.csv").read_text().splitlines()


def _write_rows(data: Path, rows: list[str]) -> None:
    (data / "clinical_annotation.csv").write_text("\n".join(rows) + "\n")


def _folder(data: Path, patient: str) -> Path:
    return next(p for split in ("trainset", "testset") if (p := data / split / patient).is_dir())


def test_clean_sample_and_json_keys(dataset: Path) -> None:
    code, report = _check(dataset)
    assert code == 0 and list(report) == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    assert report["challenge"] == "lympho" and report["data"] == str(dataset.absolute())
    assert report["counts"]["rows in clinical_annotation.csv"] == 8


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r[1].replace("P1,", "../P1,"), r"row 2: ID '../P1' contains"),
    (lambda r: r[2].split(",", 1)[0] + "," + r[1].split(",", 1)[1], "row 3: duplicate ID P1"),
    (lambda r: ",".join(r[1].split(",")[:4] + ["1943.01.02"] + r[1].split(",")[5:]), "row 2 (P1): date of birth"),
    (lambda r: ",".join(r[1].split(",")[:2] + ["2"] + r[1].split(",")[3:]), "row 2 (P1): LABEL '2' not in -1, 0, 1"),
    (lambda r: ",".join(r[1].split(",")[:3] + ["X"] + r[1].split(",")[4:]), "row 2 (P1): GENDER 'X' not M or F"),
    (lambda r: ",".join(r[1].split(",")[:5] + ["many"]), "row 2 (P1): LYMPH_COUNT 'many' is not a positive number"),
])
def test_each_bad_csv_row_is_named(dataset: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(dataset)
    rows[1 if "duplicate" not in message else 2] = edit(rows)
    _write_rows(dataset, rows)
    code, report = _check(dataset)
    assert code == 2, report
    mine = [p for p in report["problems"] if p["path"].endswith("clinical_annotation.csv")]
    assert len(mine) == 1 and message in mine[0]["problem"] and mine[0]["blocking"], report["problems"]


def test_every_bad_row_not_only_the_first(dataset: Path) -> None:
    rows = _rows(dataset)
    for k in (1, 3):
        rows[k] = ",".join(rows[k].split(",")[:5] + ["-1"])
    _write_rows(dataset, rows)
    code, report = _check(dataset)
    assert code == 2 and [p["problem"].split(" (")[0] for p in report["problems"]] == ["row 2", "row 4"]


def test_missing_column_stops_the_check(dataset: Path) -> None:
    rows = _rows(dataset)
    _write_rows(dataset, [r.rsplit(",", 1)[0] for r in rows])
    code, report = _check(dataset)
    assert code == 2 and len(report["problems"]) == 1 and "missing column(s) LYMPH_COUNT" in report["problems"][0]["problem"]


def test_missing_empty_and_misplaced_folders(dataset: Path) -> None:
    shutil.rmtree(_folder(dataset, "P2"))
    for f in _folder(dataset, "P3").iterdir():
        f.unlink()
    p4 = _folder(dataset, "P4")
    other = "testset" if p4.parent.name == "trainset" else "trainset"
    p4.rename(dataset / other / "P4")
    code, report = _check(dataset)
    problems = {Path(p["path"]).name: p["problem"] for p in report["problems"]}
    assert code == 2 and set(problems) == {"P2", "P3", "P4"}
    assert problems["P2"] == "no image folder for patient P2" and problems["P3"] == "no images for patient P3"
    assert f"it is in {other}/, but LABEL" in problems["P4"]


def test_unreadable_and_too_small_images(dataset: Path) -> None:
    first = sorted(_folder(dataset, "P1").glob("*.jpg"))[0]
    first.write_bytes(b"not a jpeg")
    small = sorted(_folder(dataset, "P2").glob("*.jpg"))[0]
    Image.new("RGB", (100, 120)).save(small, format="JPEG")
    code, report = _check(dataset)
    assert code == 2 and [(Path(p["path"]).name, p["problem"]) for p in report["problems"]] == [
        (first.name, "unreadable image (UnidentifiedImageError)"),
        (small.name, "image 100×120 smaller than the --crop 112")]
    assert report["ranges"]["image width (px)"] == [100, 224]
    shutil.copy(first.with_name("000001.jpg"), first)  # readable again; the small image allows --crop 96
    assert _check(dataset, "--crop", "96")[0] == 0


def test_unlisted_folder_is_a_warning_and_the_table(dataset: Path) -> None:
    shutil.copytree(_folder(dataset, "P1"), dataset / "trainset" / "P99")
    code, report = _check(dataset)
    assert code == 0 and report["ok"] is True
    assert report["problems"] == [{"path": str(dataset / "trainset" / "P99"), "blocking": False,
                                   "problem": "folder not in clinical_annotation.csv: tile ignores it"}]
    table = CliRunner().invoke(app, ["lympho", "check", "--data", str(dataset)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "P99" in table.stdout and "bag size" in table.stdout
