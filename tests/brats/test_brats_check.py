"""``brats check``: the real 2023 case, every known bad input of issues 11/12, strict --json."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import Geometry, write_volume

CASE = "BraTS-GLI-00000-000"
REAL_FILES = {"t1c": "t1c", "t1n": "t1n", "t2f": "t2f", "t2w": "t2w", "seg": "segmentation"}
GEOMETRY = Geometry((24, 20, 6), (1.0, 1.0, 1.0), (0.0, -239.0, 0.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))


def _check(data: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["brats", "check", "--data", str(data), "--json", *extra])
    return result.exit_code, result.output


def _case(root: Path, name: str, sep: str = "_", files: tuple[str, ...] = ("flair", "t1", "t1ce", "t2"),
          seg: np.ndarray | None = None) -> Path:
    """A hand-built case of 6×20×24 voxels (numpy order) with the given modality suffixes."""
    rng = np.random.default_rng(0)
    for suffix in files:
        write_volume(root / name / f"{name}{sep}{suffix}.nii.gz", rng.uniform(0, 9, (6, 20, 24)).astype(np.int16),
                     GEOMETRY)
    if seg is not None:
        write_volume(root / name / f"{name}{sep}seg.nii.gz", seg.astype(np.uint8), GEOMETRY)
    return root / name


def _labels(value: int) -> np.ndarray:
    seg = np.zeros((6, 20, 24), np.uint8)
    seg[2, 5:9, 5:9] = value
    return seg


def test_check_reads_the_real_2023_case(realdata: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data" / CASE
    folder.mkdir(parents=True)
    for suffix, source in REAL_FILES.items():
        (folder / f"{CASE}-{suffix}.nii.gz").symlink_to(realdata / "brats-2023" / f"{source}.nii.gz")
    code, output = _check(tmp_path / "data", "--workers", "2")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] and report["counts"]["cases"] == 1 and report["counts"]["brats2023 naming"] == 1
    assert report["counts"]["train (with segmentation)"] == 1 and report["counts"]["cases with ET"] == 1
    # t1c float32, t1n/t2f/t2w float64, the segmentation uint8 (SOURCES.md)
    assert report["counts"]["files of 32-bit float"] == 1 and report["counts"]["files of 64-bit float"] == 3
    assert {k: report["ranges"][k] for k in ("size x", "size y", "size z")} == {
        "size x": [64, 64], "size y": [96, 96], "size z": [48, 48]}
    assert report["ranges"]["spacing z (mm)"] == [1.0, 1.0] and report["ranges"]["label values"] == [0, 3]
    (warning,) = report["problems"]  # the crop: a warning, tile goes on
    assert not warning["blocking"] and "64×96×48" in warning["problem"] and warning["path"].endswith("-t2f.nii.gz")


def test_json_is_strict_with_the_shared_keys(tmp_path: Path) -> None:
    _case(tmp_path / "data", "c1", seg=_labels(4))
    _case(tmp_path / "data", "c2")  # a test case: no segmentation
    code, output = _check(tmp_path / "data")
    assert code == 0, output
    report = json.loads(output, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert list(report) == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    assert report["challenge"] == "brats" and report["data"] == str((tmp_path / "data").absolute())
    assert report["counts"]["train (with segmentation)"] == 1 and report["counts"]["test (no segmentation)"] == 1
    assert report["counts"]["cases with ET"] == 1 and report["counts"]["cases with TC"] == 1
    result = CliRunner().invoke(app, ["brats", "check", "--data", str(tmp_path / "data")])  # the tables
    assert result.exit_code == 0 and "cases with ET" in result.output and "240×240×155" in result.output


def _missing_t2(root: Path) -> Path:
    folder = _case(root, "c1", seg=_labels(4))
    (folder / "c1_t2.nii.gz").unlink()
    return folder


def _label_3_in_2021(root: Path) -> Path:
    return _case(root, "c1", seg=_labels(3)) / "c1_seg.nii.gz"


def _label_4_in_2023(root: Path) -> Path:
    return _case(root, "c1", "-", ("t2f", "t1n", "t1c", "t2w"), seg=_labels(4)) / "c1-seg.nii.gz"


def _grid_differs(root: Path) -> Path:
    folder = _case(root, "c1", seg=_labels(1))
    write_volume(folder / "c1_t2.nii.gz", np.zeros((6, 18, 24), np.int16),
                 Geometry((24, 18, 6), GEOMETRY.spacing, GEOMETRY.origin, GEOMETRY.direction))
    return folder / "c1_t2.nii.gz"


def _seg_grid_differs(root: Path) -> Path:
    folder = _case(root, "c1")
    write_volume(folder / "c1_seg.nii.gz", _labels(1), Geometry((24, 20, 6), (1.0, 1.0, 2.0), GEOMETRY.origin,
                                                                GEOMETRY.direction))
    return folder / "c1_seg.nii.gz"


def _bad_name(root: Path) -> Path:
    return _case(root, "a..b", seg=_labels(1))


def _mixed_in_case(root: Path) -> Path:
    folder = _case(root, "c1", seg=_labels(1))
    _case(root, "c1", "-", ("t2f",))
    return folder


def _mixed_dataset(root: Path) -> Path:
    _case(root, "c1", seg=_labels(1))
    _case(root, "c2", "-", ("t2f", "t1n", "t1c", "t2w"), seg=_labels(3))
    return root


def _truncated(root: Path) -> Path:
    path = _case(root, "c1", seg=_labels(1)) / "c1_t1.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-200]))
    return path


def _no_segmentation(root: Path) -> Path:
    _case(root, "c1")
    return root


@pytest.mark.parametrize(("make", "problem"), [
    (_missing_t2, "lacks modality t2"),
    (_label_3_in_2021, "BraTS 2023"),
    (_label_4_in_2023, "label 4 is the BraTS 2021"),
    (_grid_differs, "grid differs from c1_flair.nii.gz"),
    (_seg_grid_differs, "grid differs from c1_flair.nii.gz"),
    (_bad_name, "plain names"),
    (_mixed_in_case, "mixes the 2021"),
    (_mixed_dataset, "2021 and the 2023 naming"),
    (_truncated, "truncated"),
    (_no_segmentation, "no case with a"),
])
def test_each_known_bad_input_is_named_and_blocks(tmp_path: Path, make, problem: str) -> None:  # noqa: ANN001
    bad = make(tmp_path / "data")
    code, output = _check(tmp_path / "data")
    assert code == 2, output
    report = json.loads(output)
    assert not report["ok"]
    hits = [p for p in report["problems"] if problem in p["problem"]]
    assert hits and hits[0]["blocking"] and hits[0]["path"] == str(bad), report["problems"]
    # tile stops on the same input (the check predicts tile)
    result = CliRunner().invoke(app, ["brats", "tile", "--data", str(tmp_path / "data"), "--cache",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output


def test_warnings_do_not_stop_and_every_case_is_checked(tmp_path: Path) -> None:
    _case(tmp_path / "data", "c1", seg=_labels(2))
    write_volume(tmp_path / "data" / "c2" / "c2_seg.nii.gz", _labels(1).astype(np.float32), GEOMETRY)
    _case(tmp_path / "data", "c2")  # a segmentation stored as float: tile reads it, a warning
    (tmp_path / "data" / "notes").mkdir()  # no modality file: ignored by tile, a warning
    _missing_t2(tmp_path / "other")
    shutil.copytree(tmp_path / "other" / "c1", tmp_path / "data" / "c3")
    for path in (tmp_path / "data" / "c3").iterdir():
        path.rename(path.with_name(path.name.replace("c1", "c3")))
    code, output = _check(tmp_path / "data", "--workers", "2")
    assert code == 2, output  # c3 blocks; the others are still reported
    problems = {(Path(p["path"]).name, p["blocking"]) for p in json.loads(output)["problems"]}
    assert {("c2_seg.nii.gz", False), ("notes", False), ("c3", True)} <= problems, problems
    shutil.rmtree(tmp_path / "data" / "c3")
    code, output = _check(tmp_path / "data")
    assert code == 0 and json.loads(output)["counts"]["train (with segmentation)"] == 2, output
