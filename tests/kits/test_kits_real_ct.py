"""A real CT (TotalSegmentator's example, 122×101×30 int16 HU, 3 mm) as a KiTS19 case.

The case is built the way a real KiTS19 case is stored: axial slices on the FIRST NIfTI/ITK axis
(numpy arrays from SimpleITK are rows×cols×slices, as for the real case_00000), with the source's
physical geometry kept exactly (spacing, origin and direction permuted with the axes). Kidney is
the source labels 2 (kidney_right) | 3 (kidney_left) → 1. It is written twice: as KiTS stores it
(int16 HU, uint8 labels) and as some real releases store CT (int32 HU, float64 0/1 masks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.kits.data import find_cases, read_case

# KiTS ITK axis m holds the source's ITK axis PERM[m]: slices (source axis 2, z) first
PERM = (2, 0, 1)
STORAGE = [pytest.param(np.int16, np.uint8, id="int16-uint8"), pytest.param(np.int32, np.float64, id="int32-float64")]


@pytest.fixture(scope="module")
def source(realdata: Path) -> dict:
    """The real CT and label map, axial-first numpy (30 slices × 101 rows × 122 cols), and its image."""
    image = sitk.ReadImage(str(realdata / "ct" / "example_ct_sm.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(realdata / "ct" / "example_seg.nii.gz")))
    hu = sitk.GetArrayFromImage(image)
    # the source's axial axis is ITK axis 2 (direction diag(−1, −1, 1)) = numpy axis 0
    assert hu.shape == (30, 101, 122) and hu.dtype == np.int16 and image.GetDirection()[8] == 1.0
    return {"image": image, "hu": hu, "kidney": (seg == 2) | (seg == 3)}


def _kits_image(array_axial_first: np.ndarray, src: sitk.Image) -> sitk.Image:
    """A KiTS-layout image (slices on the first ITK axis) of an axial-first array, same world grid."""
    image = sitk.GetImageFromArray(np.moveaxis(array_axial_first, 0, 2))  # numpy rows×cols×slices
    direction = np.asarray(src.GetDirection()).reshape(3, 3)[:, list(PERM)]
    image.SetSpacing(tuple(src.GetSpacing()[p] for p in PERM))
    image.SetOrigin(src.GetOrigin())
    image.SetDirection(tuple(direction.ravel().tolist()))
    return image


def _write_kits_case(root: Path, source: dict, hu_dtype: type, mask_dtype: type) -> Path:
    folder = root / "data" / "case_00000"
    folder.mkdir(parents=True)
    imaging = _kits_image(source["hu"].astype(hu_dtype), source["image"])
    sitk.WriteImage(imaging, str(folder / "imaging.nii.gz"), useCompression=True)
    sitk.WriteImage(_kits_image(source["kidney"].astype(mask_dtype), source["image"]),
                    str(folder / "segmentation.nii.gz"), useCompression=True)
    # the same world grid: voxel (i, j, k) of the source is voxel (k, i, j) of the KiTS case
    for index in [(0, 0, 0), (121, 100, 29), (7, 50, 13)]:
        kits_index = tuple(index[p] for p in PERM)
        assert imaging.TransformIndexToPhysicalPoint(kits_index) == pytest.approx(
            source["image"].TransformIndexToPhysicalPoint(index))
    return root


@pytest.mark.parametrize(("hu_dtype", "mask_dtype"), STORAGE)
def test_reader_returns_the_real_hu_and_kidney(source: dict, tmp_path: Path, hu_dtype: type,
                                               mask_dtype: type) -> None:
    root = _write_kits_case(tmp_path, source, hu_dtype, mask_dtype)
    (case,) = find_cases(root)
    assert case.case_id == "case_00000" and case.segmentation is not None
    image, labels = read_case(case, as_float=False)
    assert image.array.dtype == hu_dtype and image.array.shape == (101, 122, 30)
    assert image.axial_axis == 2  # slices LAST in numpy order, as in the real case_00000
    assert image.spacing_numpy == pytest.approx((3.0, 3.0, 3.0))
    assert image.geometry.spacing == pytest.approx(source["image"].GetSpacing())
    np.testing.assert_array_equal(image.axial_first(), source["hu"])
    assert int(image.array.min()) == -1100 and int(image.array.max()) == 1207
    # labels: uint8 {0, 1} on the same numpy layout, kidney voxel for voxel
    assert labels is not None and labels.dtype == np.uint8 and labels.shape == image.array.shape
    n_kidney = int(source["kidney"].sum())
    assert n_kidney == 3947 + 3676  # kidney_right + kidney_left of example_seg
    assert np.bincount(labels.ravel(), minlength=3).tolist() == [source["kidney"].size - n_kidney, n_kidney, 0]
    np.testing.assert_array_equal(np.moveaxis(labels, 2, 0), source["kidney"])
    # the float reader (training and tile) gives the same HU
    as_float, _ = read_case(case)
    assert as_float.array.dtype == np.float32
    np.testing.assert_array_equal(as_float.axial_first(), source["hu"].astype(np.float32))


@pytest.mark.parametrize(("hu_dtype", "mask_dtype"), STORAGE)
def test_tile_caches_every_axial_slice(source: dict, tmp_path: Path, hu_dtype: type, mask_dtype: type) -> None:
    root = _write_kits_case(tmp_path, source, hu_dtype, mask_dtype)
    out = tmp_path / "slices"
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(root), "--cache", str(out)])
    assert result.exit_code == 0, result.output
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 30 and set(index["case"]) == {"case_00000"}
    assert index["slice"].tolist() == list(range(30))
    assert (index["height"].iloc[0], index["width"].iloc[0]) == (101, 122)
    kidney_slices = np.flatnonzero(source["kidney"].any(axis=(1, 2))).tolist()
    assert index.loc[index["has_kidney"], "slice"].tolist() == kidney_slices
    assert 0 < len(kidney_slices) < 30 and not index["has_tumor"].any()
    np.testing.assert_array_equal(np.load(out / "labels" / "case_00000.npy"), source["kidney"])
    images = np.load(out / "images" / "case_00000.npy")
    assert images.shape == (30, 101, 122) and images.dtype == np.float16
    # the default KiTS window [−79, 304] HU and z-score (x − 101) / 76.9, written independently here
    expected = (np.clip(source["hu"].astype(np.float64), -79, 304) - 101) / 76.9
    np.testing.assert_allclose(images.astype(np.float64), expected, atol=2e-3)
