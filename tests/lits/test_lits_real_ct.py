"""A real CT (TotalSegmentator's example, 122×101×30 int16 HU, 3 mm) as a LiTS case.

``volume-0.nii`` + ``segmentation-0.nii`` (uncompressed, as LiTS ships them) on the source's own
grid (its axial axis is the last ITK axis, numpy axis 0), liver = source label 5 → 1. Written as
int16 HU with uint8 labels and as int32 HU with float64 0/1 masks, as some real releases store
them. Only the stable, predict-free paths: ``find_cases``, ``read_ct``, ``read_labels``, ``lits tile``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.lits.data import find_cases, read_ct, read_labels

STORAGE = [pytest.param(np.int16, np.uint8, id="int16-uint8"), pytest.param(np.int32, np.float64, id="int32-float64")]


@pytest.fixture(scope="module")
def source(realdata: Path) -> dict:
    """The real CT (numpy 30 slices × 101 × 122, int16 HU), its image, and the liver mask."""
    image = sitk.ReadImage(str(realdata / "ct" / "example_ct_sm.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(realdata / "ct" / "example_seg.nii.gz")))
    hu = sitk.GetArrayFromImage(image)
    assert hu.shape == (30, 101, 122) and hu.dtype == np.int16
    return {"image": image, "hu": hu, "liver": seg == 5}


def _write(path: Path, array: np.ndarray, like: sitk.Image) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)  # spacing, origin, direction of the real CT
    sitk.WriteImage(image, str(path), useCompression=False)


def _write_lits_case(root: Path, source: dict, hu_dtype: type, mask_dtype: type) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "volume-0.nii", source["hu"].astype(hu_dtype), source["image"])
    _write(root / "segmentation-0.nii", source["liver"].astype(mask_dtype), source["image"])
    return root


@pytest.mark.parametrize(("hu_dtype", "mask_dtype"), STORAGE)
def test_readers_return_the_real_hu_and_liver(source: dict, tmp_path: Path, hu_dtype: type,
                                              mask_dtype: type) -> None:
    root = _write_lits_case(tmp_path / "lits", source, hu_dtype, mask_dtype)
    (case,) = find_cases(root)
    assert (case.number, case.test, case.name) == (0, False, "volume-0")
    assert case.segmentation == root / "segmentation-0.nii"
    volume = read_ct(case.volume)
    assert volume.array.dtype == np.float32 and volume.array.shape == (30, 101, 122)
    assert volume.axial_axis == 0
    assert volume.spacing_numpy == pytest.approx((3.0, 3.0, 3.0))
    assert volume.geometry.origin == pytest.approx(source["image"].GetOrigin())
    assert volume.geometry.direction == pytest.approx(source["image"].GetDirection())
    np.testing.assert_array_equal(volume.array, source["hu"].astype(np.float32))  # signed HU, −1100…1207
    assert (volume.array.min(), volume.array.max()) == (-1100.0, 1207.0)
    labels = read_labels(case, volume)
    assert labels.dtype == np.uint8 and labels.shape == volume.array.shape
    n_liver = int(source["liver"].sum())
    assert n_liver == 38_634  # label 5 of example_seg
    assert np.bincount(labels.ravel(), minlength=3).tolist() == [source["liver"].size - n_liver, n_liver, 0]
    np.testing.assert_array_equal(labels, source["liver"])


@pytest.mark.parametrize(("hu_dtype", "mask_dtype"), STORAGE)
def test_tile_keeps_every_axial_slice_and_the_liver(source: dict, tmp_path: Path, hu_dtype: type,
                                                    mask_dtype: type) -> None:
    root = _write_lits_case(tmp_path / "lits", source, hu_dtype, mask_dtype)
    out = tmp_path / "patches"
    result = CliRunner().invoke(app, ["lits", "tile", "--data", str(root), "--cache", str(out)])
    assert result.exit_code == 0, result.output
    labels = np.load(out / "labels" / "volume-0.npy")
    np.testing.assert_array_equal(labels, source["liver"])  # 30 axial slices, liver voxel for voxel
    images = np.load(out / "images" / "volume-0.npy")
    assert images.shape == (1, 30, 101, 122)
    # LiTS window [−200, 250] HU scaled (x − 25) / 112.5, written independently here
    expected = (np.clip(source["hu"].astype(np.float64), -200, 250) - 25) / 112.5
    np.testing.assert_allclose(images[0].astype(np.float64), expected, atol=2e-3)
    index = np.load(out / "index" / "volume-0.npz")
    np.testing.assert_array_equal(index["class_1"], np.flatnonzero(source["liver"]))
