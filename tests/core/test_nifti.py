"""NIfTI reading: the axial axis from the direction, geometry kept on write, bad files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medchallenge.core.errors import DataError
from medchallenge.core.nifti import read_geometry, read_volume, write_volume


def test_axial_axis_of_real_files(realdata: Path) -> None:
    kits = read_volume(realdata / "kits19/case_00061_segmentation.nii.gz")
    assert kits.array.shape == (512, 512, 29) and kits.axial_axis == 2
    assert kits.axial_first().shape == (29, 512, 512)
    assert read_geometry(realdata / "kits19/case_00000_segmentation.nii.gz").size == (611, 512, 512)
    assert read_geometry(realdata / "kits19/case_00000_segmentation.nii.gz").axial_axis == 2
    ct = read_volume(realdata / "ct/example_ct_sm.nii.gz")
    assert ct.array.dtype == np.int16 and ct.axial_axis == 0 and ct.axial_first().shape == (30, 101, 122)
    assert ct.array.min() < -1000  # signed HU stay signed


def test_write_keeps_geometry(realdata: Path, tmp_path: Path) -> None:
    ct = read_volume(realdata / "ct/example_ct_sm.nii.gz")
    pred = (ct.axial_first() > 0).astype(np.uint8)
    write_volume(tmp_path / "p.nii.gz", ct.from_axial_first(pred), ct.geometry)
    back = read_volume(tmp_path / "p.nii.gz")
    assert back.geometry.same_grid(ct.geometry) and back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.axial_first(), pred)


def test_bad_files(realdata: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="4-D"):
        read_volume(realdata / "nifti-quirks/functional.nii")
    truncated = tmp_path / "t.nii.gz"
    truncated.write_bytes((realdata / "ct/example_ct_sm.nii.gz").read_bytes()[:5000])
    with pytest.raises(DataError, match=str(truncated.name)):
        read_volume(truncated)
    with pytest.raises(DataError, match="file not found"):
        read_volume(tmp_path / "none.nii.gz")
