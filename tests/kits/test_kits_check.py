"""``kits check``: every real file of ../shared/realdata arranged as KiTS cases, each known bad input
of the earlier issues, and the strict ``--json`` object; the verdict is always ``tile``'s."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import Geometry, write_volume
from medchallenge.kits.sample import KITS_DIRECTION

GRID = Geometry((4, 6, 6), (3.0, 0.8, 0.8), (0.0, 0.0, 0.0), KITS_DIRECTION)  # numpy 6×6×4, slices last


def _check(data: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["kits", "check", "--data", str(data), "--json", *extra])
    assert result.exit_code in (0, 2), result.output
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert list(report) == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    assert report["challenge"] == "kits" and report["ok"] == (result.exit_code == 0)
    return result.exit_code, report


def _tile(data: Path, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(data), "--cache", str(tmp_path / "tile-cache")])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    return result.exit_code, errors[0] if errors else ""


def _same_verdict(data: Path, tmp_path: Path) -> tuple[int, dict]:
    """check and tile agree: the same exit code, and the file of tile's one error line is among check's
    blocking problems (check reads the header first, so a truncated file may be worded otherwise)."""
    code, report = _check(data)
    tile_code, error = _tile(data, tmp_path)
    assert code == tile_code, (report["problems"], error)
    if tile_code == 2:
        blocking = [f"error: {p['path']}: " for p in report["problems"] if p["blocking"]]
        assert any(error.startswith(b) for b in blocking), (error, blocking)
    return code, report


# ------------------------------------------------------------------ real files

def test_real_kits19_segmentations_without_imaging(realdata: Path, tmp_path: Path) -> None:
    for number in (0, 61):
        folder = tmp_path / "data" / f"case_{number:05d}"
        folder.mkdir(parents=True)
        (folder / "segmentation.nii.gz").symlink_to(realdata / "kits19" / f"case_{number:05d}_segmentation.nii.gz")
    code, report = _same_verdict(tmp_path, tmp_path)
    assert code == 2
    assert [(p["path"], p["problem"], p["blocking"]) for p in report["problems"]] == [
        (str(tmp_path / "data" / f"case_{n:05d}"), "case folder without imaging.nii.gz", True) for n in (0, 61)]
    counts = report["counts"]
    assert (counts["cases"], counts["train (with segmentation)"], counts["test (imaging only)"]) == (2, 2, 0)
    assert counts["kidney voxels (label 1)"] == 915_679 + 124_943  # SOURCES.md counts of the two real files
    assert counts["tumour voxels (label 2)"] == 18_491 + 23_276
    assert counts["cases with tumour"] == 2 and counts["segmentation uint8"] == 2
    ranges = report["ranges"]  # from the segmentations' headers: axial axis first in ITK order
    assert ranges["slices"] == [29, 611] and ranges["rows (px)"] == ranges["cols (px)"] == [512, 512]
    assert ranges["slice spacing (mm)"][1] == 5.0  # case_00061: 5 mm slices


def _real_ct_case(realdata: Path, root: Path, labels: Callable[[np.ndarray], np.ndarray]) -> Path:
    folder = root / "data" / "case_00000"
    folder.mkdir(parents=True)
    (folder / "imaging.nii.gz").symlink_to(realdata / "ct" / "example_ct_sm.nii.gz")
    source = sitk.ReadImage(str(realdata / "ct" / "example_seg.nii.gz"))
    seg = sitk.GetImageFromArray(labels(sitk.GetArrayFromImage(source)).astype(np.uint8))
    seg.CopyInformation(source)
    sitk.WriteImage(seg, str(folder / "segmentation.nii.gz"), useCompression=True)
    return root


def test_real_ct_with_its_kidneys_is_a_clean_case(realdata: Path, tmp_path: Path) -> None:
    root = _real_ct_case(realdata, tmp_path, lambda seg: (seg == 2) | (seg == 3))  # kidney right | left → 1
    code, report = _same_verdict(root, tmp_path)
    assert code == 0 and report["problems"] == []
    counts = report["counts"]
    assert (counts["cases"], counts["cases with kidney"], counts["cases with tumour"]) == (1, 1, 0)
    assert counts["kidney voxels (label 1)"] == 3947 + 3676 and counts["imaging int16"] == 1
    ranges = report["ranges"]
    assert (ranges["slices"], ranges["rows (px)"], ranges["cols (px)"]) == ([30, 30], [101, 101], [122, 122])
    assert ranges["slice spacing (mm)"] == [3.0, 3.0] and ranges["pixel spacing (mm)"] == [3.0, 3.0]


def test_real_ct_with_its_raw_label_map_is_refused(realdata: Path, tmp_path: Path) -> None:
    root = _real_ct_case(realdata, tmp_path, lambda seg: seg)  # TotalSegmentator labels: spleen 1, liver 5, …
    code, report = _same_verdict(root, tmp_path)
    (problem,) = report["problems"]
    assert code == 2 and problem["path"].endswith("case_00000/segmentation.nii.gz")
    assert "outside {0, 1, 2}" in problem["problem"]


def test_nifti_quirks(realdata: Path, tmp_path: Path) -> None:
    """Big-endian int16 imaging with a uint16 label on its grid is read; a 4-D fMRI is refused, as by tile."""
    folder = tmp_path / "data" / "case_00000"
    folder.mkdir(parents=True)
    (folder / "imaging.nii.gz").write_bytes(gzip.compress((realdata / "nifti-quirks" / "anatomical.nii").read_bytes()))
    (folder / "segmentation.nii.gz").symlink_to(realdata / "nifti-quirks" / "anatomical_label.nii.gz")
    code, report = _same_verdict(tmp_path, tmp_path)
    assert code == 0 and report["problems"] == []
    assert report["counts"]["kidney voxels (label 1)"] == 330 and report["counts"]["segmentation uint16"] == 1
    assert report["ranges"]["slices"] == [25, 25] and report["ranges"]["slice spacing (mm)"] == [2.0, 2.0]
    fmri = tmp_path / "data" / "case_00001"
    fmri.mkdir()
    (fmri / "imaging.nii.gz").write_bytes(gzip.compress((realdata / "nifti-quirks" / "functional.nii").read_bytes()))
    (fmri / "segmentation.nii.gz").symlink_to(realdata / "nifti-quirks" / "anatomical_label.nii.gz")
    code, report = _same_verdict(tmp_path, tmp_path / "again")
    (problem,) = report["problems"]
    assert code == 2 and problem["path"] == str(fmri / "imaging.nii.gz") and "4-D image" in problem["problem"]


# ------------------------------------------------------------------ known bad inputs

def _case(folder: Path, labels: np.ndarray | None = None, imaging: np.ndarray | None = None) -> None:
    write_volume(folder / "imaging.nii.gz", np.full((6, 6, 4), -1000, np.int16) if imaging is None else imaging, GRID)
    if labels is not None:
        write_volume(folder / "segmentation.nii.gz", labels.astype(np.uint8), GRID)


def _labels() -> np.ndarray:
    labels = np.zeros((6, 6, 4), np.uint8)
    labels[1:4, 1:4, 1:3] = 1
    labels[2, 2, 2] = 2
    return labels


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_labels(data: Path) -> Path:
    _case(data / "case_00001", _labels() * 2)
    return data / "case_00001" / "segmentation.nii.gz"


def _other_grid(data: Path) -> Path:
    _case(data / "case_00001")
    grid = Geometry((3, 6, 6), GRID.spacing, GRID.origin, GRID.direction)
    write_volume(data / "case_00001" / "segmentation.nii.gz", _labels()[:, :, :3], grid)
    return data / "case_00001" / "segmentation.nii.gz"


def _no_imaging(data: Path) -> Path:
    (data / "case_00001").mkdir()
    return data / "case_00001"


def _truncated_imaging(data: Path) -> Path:
    _case(data / "case_00001", _labels())
    _truncate(data / "case_00001" / "imaging.nii.gz")
    return data / "case_00001" / "imaging.nii.gz"


def _truncated_labels(data: Path) -> Path:
    _case(data / "case_00001", _labels())
    _truncate(data / "case_00001" / "segmentation.nii.gz")
    return data / "case_00001" / "segmentation.nii.gz"


def _nan_imaging(data: Path) -> Path:
    hu = np.zeros((6, 6, 4), np.float32)
    hu[1, 2, 3] = np.nan
    _case(data / "case_00001", _labels(), hu)
    return data / "case_00001" / "imaging.nii.gz"


def _two_d_imaging(data: Path) -> Path:
    (data / "case_00001").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(data / "case_00001" / "imaging.nii.gz"))
    write_volume(data / "case_00001" / "segmentation.nii.gz", _labels(), GRID)
    return data / "case_00001" / "imaging.nii.gz"


def _misnamed(data: Path) -> Path:
    _case(data / "case_0001", _labels())
    return data


BAD = [
    pytest.param(_bad_labels, "labels [4] outside {0, 1, 2}", id="labels"),
    pytest.param(_other_grid, "grid differs from imaging.nii.gz", id="grid"),
    pytest.param(_no_imaging, "case folder without imaging.nii.gz", id="no-imaging"),
    pytest.param(_truncated_imaging, "truncated", id="truncated-imaging"),
    pytest.param(_truncated_labels, "truncated", id="truncated-labels"),
    pytest.param(_nan_imaging, "1 NaN voxel(s) (case_00001)", id="nan"),
    pytest.param(_two_d_imaging, "is a 2-D image", id="2d"),
    pytest.param(_misnamed, "case folder 'case_0001'", id="misnamed"),
]


@pytest.mark.parametrize(("make", "text"), BAD)
def test_each_known_bad_input_is_named_and_stops(tmp_path: Path, make: Callable[[Path], Path], text: str) -> None:
    data = tmp_path / "kits" / "data"
    _case(data / "case_00000", _labels())
    culprit = make(data)
    code, report = _same_verdict(tmp_path / "kits", tmp_path)
    assert code == 2
    named = [p for p in report["problems"] if p["path"] == str(culprit) and text in p["problem"]]
    assert named and all(p["blocking"] for p in named), report["problems"]


def test_test_case_problems_are_warnings_and_kits_json_is_checked(tmp_path: Path) -> None:
    """A truncated test case (no segmentation) does not stop tile: a warning saying predict would stop."""
    data = tmp_path / "kits" / "data"
    _case(data / "case_00000", _labels())
    _case(data / "case_00210")
    _truncate(data / "case_00210" / "imaging.nii.gz")
    (data / "kits.json").write_text(json.dumps([{"case_id": "case_00000"}, {"case_id": "case_00000"},
                                                {"case_id": "../x"}]))
    (data / "case_00061_segmentation.nii.gz").write_bytes(b"")  # a flat download: ignored by tile
    code, report = _same_verdict(tmp_path / "kits", tmp_path)
    assert code == 0 and report["ok"] is True
    problems = {(Path(p["path"]).name, p["blocking"]): p["problem"] for p in report["problems"]}
    assert "predict would stop" in problems[("imaging.nii.gz", False)]
    assert "truncated" in problems[("imaging.nii.gz", False)]
    json_problems = [p["problem"] for p in report["problems"] if p["path"].endswith("kits.json")]
    assert any("listed twice: case_00000" in p for p in json_problems)
    assert any("'../x'" in p for p in json_problems)
    assert any("case_00210" in p and "not listed" in p for p in json_problems)
    assert "file named like a case" in problems[("case_00061_segmentation.nii.gz", False)]
    counts = report["counts"]
    assert (counts["cases"], counts["train (with segmentation)"], counts["test (imaging only)"]) == (2, 1, 1)
    assert counts["kits.json entries"] == 3


def test_no_cases_and_parallel_workers(tmp_path: Path) -> None:
    (tmp_path / "empty" / "data").mkdir(parents=True)
    code, report = _check(tmp_path / "empty")
    assert code == 2 and report["problems"][0]["problem"] == "no case_XXXXX folders"
    data = tmp_path / "kits" / "data"
    for n in (0, 2, 3):
        _case(data / f"case_{n:05d}", _labels())
    _bad_labels(data)  # case_00001
    serial = _check(tmp_path / "kits")
    assert _check(tmp_path / "kits", "--workers", "2") == serial
    assert serial[0] == 2 and serial[1]["counts"]["cases"] == 4


def test_table_output(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _case(data / "case_00000", _labels())
    _no_imaging(data)
    result = CliRunner().invoke(app, ["kits", "check", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "train (with segmentation)" in result.output and "1 problem(s)" in result.output
