"""core.check: every problem collected with its file; exit 2 only for problems that stop tile."""

from __future__ import annotations

import json
from pathlib import Path

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError


def _header(path: Path) -> int:
    """A stand-in header reader: the file's size, or a DataError for an empty file."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, "empty file")
    return size


def test_every_bad_file_is_reported_not_only_the_first(tmp_path: Path) -> None:
    files = []
    for name, body in (("a.nii", b"xx"), ("b.nii", b""), ("c.nii", b"xxxx"), ("d.nii", b"")):
        (tmp_path / name).write_bytes(body)
        files.append(tmp_path / name)
    report = CheckReport("toy", tmp_path)
    sizes = check_each(files, _header, report, path_of=lambda p: p, workers=0)
    assert sizes == [2, None, 4, None]
    assert [(Path(p.path).name, p.problem) for p in report.problems] == [("b.nii", "empty file"),
                                                                         ("d.nii", "empty file")]
    report.ranges["size (bytes)"] = value_range(sizes)
    assert report.ranges["size (bytes)"] == (2, 4)
    assert report.exit_code() == 2
    parsed = json.loads(json.dumps(report.to_json()))
    assert parsed["ok"] is False and len(parsed["problems"]) == 2


def test_warnings_alone_do_not_stop(tmp_path: Path) -> None:
    report = CheckReport("toy", tmp_path)
    report.add(tmp_path / "kits.json", "unexpected file, ignored", blocking=False)
    assert report.exit_code() == 0 and report.to_json()["ok"] is True


def test_a_problem_is_reported_with_the_file_the_error_names(tmp_path: Path) -> None:
    case = tmp_path / "case_00000"
    case.mkdir()

    def read_case(folder: Path) -> None:
        raise DataError(folder / "segmentation.nii.gz", "labels {0, 1, 7}: expected a subset of {0, 1, 2}")

    report = CheckReport("toy", tmp_path)
    check_each([case], read_case, report, path_of=lambda p: p, workers=0)
    assert report.problems[0].path == str(case / "segmentation.nii.gz")  # not just the case folder


def test_an_error_naming_a_folder_above_the_item_keeps_the_item(tmp_path: Path) -> None:
    case = tmp_path / "a..b"
    case.mkdir()

    def read_case(folder: Path) -> None:
        raise DataError(folder.parent, f"case folder '{folder.name}' is not a plain name")

    report = CheckReport("toy", tmp_path)
    check_each([case], read_case, report, path_of=lambda p: p, workers=0)
    assert report.problems[0].path == str(case)
