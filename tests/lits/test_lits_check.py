"""``lits check``: the real files arranged as LiTS cases, every known bad input of issues 11/12, strict JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import Geometry, write_volume

GEOMETRY = Geometry((8, 6, 3), (0.8, 0.8, 2.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _check(data: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["lits", "check", "--data", str(data), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def _problems(report: dict) -> list[tuple[str, str, bool]]:
    return [(Path(p["path"]).name, p["problem"], p["blocking"]) for p in report["problems"]]


def _case(root: Path, n: int, hu_dtype: type = np.int16, labels: np.ndarray | None = None,
          seg_geometry: Geometry = GEOMETRY, test: bool = False) -> None:
    hu = np.full((3, 6, 8), -1000, hu_dtype) if np.issubdtype(hu_dtype, np.signedinteger) else np.zeros((3, 6, 8), hu_dtype)
    write_volume(root / f"{'test-' if test else ''}volume-{n}.nii", hu, GEOMETRY, compress=False)
    if test:
        return
    if labels is None:
        labels = np.zeros((3, 6, 8), np.uint8)
        labels[1, 2:4, 2:5], labels[1, 3, 3] = 1, 2
    shape = tuple(reversed(seg_geometry.size))
    write_volume(root / f"segmentation-{n}.nii", np.resize(labels, shape), seg_geometry, compress=False)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def _liver_only(realdata: Path, out: Path) -> None:
    """The real CT's label map with liver (source label 5) → 1, everything else 0, on the CT's grid."""
    seg = sitk.ReadImage(str(realdata / "ct" / "example_seg.nii.gz"))
    liver = sitk.GetImageFromArray((sitk.GetArrayFromImage(seg) == 5).astype(np.uint8))
    liver.CopyInformation(seg)
    sitk.WriteImage(liver, str(out), useCompression=False)


def test_real_files_arranged_as_lits(realdata: Path, tmp_path: Path) -> None:
    root = tmp_path / "lits"
    _link(realdata / "ct" / "example_ct_sm.nii.gz", root / "volume-0.nii.gz")  # int16 HU, 122×101×30, 3 mm
    _liver_only(realdata, root / "segmentation-0.nii")
    _link(realdata / "ct" / "example_ct_sm.nii.gz", root / "test-volume-1.nii.gz")
    _link(realdata / "nifti-quirks" / "anatomical.nii", root / "volume-2.nii")  # big-endian int16, 33×41×25, 2 mm
    _link(realdata / "nifti-quirks" / "anatomical_label.nii.gz", root / "segmentation-2.nii.gz")  # uint16 0/1
    before = sorted(p.name for p in root.iterdir())
    code, report = _check(root, "--workers", "2")
    assert code == 0, report
    assert report["ok"] is True and report["problems"] == []
    assert report["counts"] == {"training volumes": 2, "test volumes": 1, "with segmentation": 2, "with tumour": 0,
                                "CT stored as int16": 3}
    assert report["ranges"] == {"slices": [25, 30], "in-plane size (px)": [33, 122], "slice spacing (mm)": [2.0, 3.0],
                                "in-plane spacing (mm)": [2.0, 3.0], "liver + tumour voxels": [330, 38_634],
                                "tumour voxels": [0, 0]}
    assert sorted(p.name for p in root.iterdir()) == before  # check writes nothing


def test_real_files_that_are_not_lits_inputs(realdata: Path, tmp_path: Path) -> None:
    root = tmp_path / "lits"
    _link(realdata / "ct" / "example_ct_sm.nii.gz", root / "volume-0.nii.gz")
    _link(realdata / "ct" / "example_seg.nii.gz", root / "segmentation-0.nii.gz")  # TotalSegmentator labels 1…
    _link(realdata / "nifti-quirks" / "functional.nii", root / "test-volume-3.nii")  # 4-D fMRI
    code, report = _check(root)
    assert code == 2 and report["ok"] is False
    (labels, fmri) = sorted(_problems(report), key=lambda p: p[0])
    assert labels[0] == "segmentation-0.nii.gz" and "outside {0, 1, 2}" in labels[1] and labels[2]
    assert fmri[0] == "test-volume-3.nii" and "4-D" in fmri[1] and "predict" in fmri[1] and not fmri[2]
    assert report["counts"]["test volumes"] == 1 and report["ranges"]["slices"] == [30, 30]


@pytest.mark.parametrize(("make", "file", "words", "blocking"), [
    (lambda r: _case(r, 0, labels=np.array([0, 1, 3], np.uint8)), "segmentation-0.nii", ["[3]", "{0, 1, 2}"], True),
    (lambda r: _case(r, 0, hu_dtype=np.uint16), "volume-0.nii", ["unsigned uint16"], True),
    (lambda r: _case(r, 0, seg_geometry=Geometry((8, 5, 3), (0.8, 0.8, 2.5), (0.0, 0.0, 0.0),
                                                 (1, 0, 0, 0, 1, 0, 0, 0, 1))), "segmentation-0.nii",
     ["grid differs from volume-0.nii"], True),
    (lambda r: (_case(r, 1), (r / "volume-1.nii").rename(r / "volume-01.nii"), _case(r, 1)), "volume-1.nii",
     ["same case", "volume-01.nii"], True),
    (lambda r: (_case(r, 0), (r / "segmentation-0.nii").write_bytes((r / "segmentation-0.nii").read_bytes()[:400])),
     "segmentation-0.nii", ["truncated"], True),
    (lambda r: (_case(r, 0), (r / "segmentation-0.nii").unlink()), "lits", ["to train on"], True),
    (lambda r: (_case(r, 0), _case(r, 1), (r / "segmentation-1.nii").unlink()), "volume-1.nii",
     ["no segmentation-1.nii"], False),
    (lambda r: (_case(r, 0), _case(r, 4), (r / "volume-4.nii").unlink()), "segmentation-4.nii", ["no volume-4.nii"],
     False),
    (lambda r: (_case(r, 0), _case(r, 2, test=True, hu_dtype=np.uint8)), "test-volume-2.nii", ["unsigned", "predict"],
     False),
    (lambda r: _case(r, 0, labels=np.zeros(1, np.uint8)), "segmentation-0.nii", ["no liver"], False),
    (lambda r: r.mkdir(), "lits", ["no volume-N.nii files"], True),
], ids=["labels", "unsigned-ct", "grid", "same-case", "truncated", "no-training-pair", "no-segmentation",
        "orphan-segmentation", "bad-test-volume", "empty-labels", "empty-folder"])
def test_known_bad_inputs_are_named(tmp_path: Path, make, file: str, words: list[str], blocking: bool) -> None:  # noqa: ANN001
    root = tmp_path / "lits"
    make(root)
    code, report = _check(root)
    found = [p for p in _problems(report) if p[0] == file]
    assert len(found) == 1, report["problems"]
    assert all(w in found[0][1] for w in words), found
    assert found[0][2] is blocking and code == (2 if blocking else 0) and report["ok"] is not blocking


def test_check_and_tile_agree(tmp_path: Path) -> None:
    """The same readers decide: what check calls blocking, tile stops on with the same words."""
    root = tmp_path / "lits"
    _case(root, 0, labels=np.array([0, 1, 7], np.uint8))
    code, report = _check(root)
    tile = CliRunner().invoke(app, ["lits", "tile", "--data", str(root), "--cache", str(tmp_path / "cache")])
    assert code == tile.exit_code == 2
    assert report["problems"][0]["problem"] in tile.output


def test_json_is_strict_with_the_shared_keys(tmp_path: Path) -> None:
    _case(tmp_path / "lits", 0)
    _case(tmp_path / "lits", 1, test=True)
    result = CliRunner().invoke(app, ["lits", "check", "--data", str(tmp_path / "lits"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert list(report) == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    assert report["challenge"] == "lits" and report["counts"]["with tumour"] == 1
    assert report["ranges"]["in-plane spacing (mm)"] == [0.8, 0.8]
    table = CliRunner().invoke(app, ["lits", "check", "--data", str(tmp_path / "lits")])
    assert table.exit_code == 0 and "no problems found" in table.output
