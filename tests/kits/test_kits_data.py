"""KiTS layout, synthetic header conventions, real labels with 1↔2 swapped, and bad volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import save_checkpoint
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.nifti import Geometry, read_geometry, read_volume, write_volume
from medchallenge.kits.data import find_cases, read_case
from medchallenge.kits.metrics import score_case
from medchallenge.kits.models import MODELS, unet_spec
from medchallenge.kits.sample import KITS_DIRECTION, write_sample_dataset


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits-sample")
    write_sample_dataset(root, n_cases=4, size=32, seed=1)
    return root


def test_real_labels_with_kidney_and_tumour_swapped(realdata: Path) -> None:
    truth = read_volume(realdata / "kits19" / "case_00061_segmentation.nii.gz").array
    swapped = truth.copy()
    swapped[truth == 1], swapped[truth == 2] = 2, 1
    score = score_case("case_00061", swapped, truth)
    assert score.kidney_dice == 1.0
    # tumour region of the swap = the real kidney (124,943 voxels), no overlap with the real tumour
    assert score.tumor_dice == 0.0


def test_sample_follows_kits_conventions(sample: Path) -> None:
    cases = find_cases(sample)
    assert [c.case_id for c in cases] == ["case_00000", "case_00001", "case_00002", "case_00210"]
    assert cases[-1].segmentation is None and (sample / "answers" / "case_00210" / "segmentation.nii.gz").is_file()
    assert not (sample / "answers" / "case_00210" / "imaging.nii.gz").exists()
    reader = sitk.ImageFileReader()
    pixel_types = []
    for case in cases[:3]:
        geometry = read_geometry(case.imaging)
        assert geometry.direction == pytest.approx(KITS_DIRECTION) and geometry.axial_axis == 2
        assert geometry.size[1:] == (32, 32)  # axial axis first in ITK order, like case_00000
        reader.SetFileName(str(case.segmentation))
        reader.ReadImageInformation()
        pixel_types.append(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
        image, labels = read_case(case)
        assert image.array.shape == labels.shape and labels.dtype == np.uint8 and labels.max() == 2
    assert sorted(pixel_types) == ["16-bit unsigned integer", "8-bit unsigned integer", "8-bit unsigned integer"]


def _case_with(tmp_path: Path, imaging: np.ndarray, geometry: Geometry) -> Path:
    write_volume(tmp_path / "data" / "case_00000" / "imaging.nii.gz", imaging, geometry)
    return tmp_path


def test_nan_voxels_are_an_error_naming_the_file(tmp_path: Path) -> None:
    hu = np.zeros((8, 8, 4), np.float32)
    hu[1, 2, 3] = np.nan
    root = _case_with(tmp_path, hu, Geometry((4, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), KITS_DIRECTION))
    with pytest.raises(DataError, match="NaN") as err:
        read_case(find_cases(root)[0])
    assert "imaging.nii.gz" in str(err.value)


def test_2d_image_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "case_00000"
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(folder / "imaging.nii.gz"))
    with pytest.raises(DataError, match="2-D"):
        read_case(find_cases(tmp_path)[0])


def test_models_and_foreign_checkpoints(sample: Path, tmp_path: Path) -> None:
    net = MODELS.build(unet_spec(depth=2, width=4))
    assert net(torch.zeros(1, 1, 16, 20)).shape == (1, 3, 16, 20)
    with pytest.raises(OptionError, match="kits: unknown model 'resnet'"):
        MODELS.build({"name": "resnet", "kwargs": {}})
    save_checkpoint(tmp_path / "brats.pt", {"challenge": "brats", "model": unet_spec(2, 4),
                                             "state_dict": net.state_dict(), "meta": {}})
    result = CliRunner().invoke(app, ["kits", "predict", "--checkpoint", str(tmp_path / "brats.pt"), "--data",
                                      str(sample), "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert result.exit_code == 2 and "brats" in result.output
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_evaluate_flat_truth_folder_and_shape_mismatch(realdata: Path, tmp_path: Path) -> None:
    import json
    import shutil

    real = realdata / "kits19" / "case_00061_segmentation.nii.gz"
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(real, tmp_path / "truth" / "segmentation_00061.nii.gz")
    shutil.copy(real, tmp_path / "pred" / "prediction_00061.nii.gz")
    result = CliRunner().invoke(app, ["kits", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                                      str(tmp_path / "truth"), "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert (metrics["kidney_dice"], metrics["tumor_dice"], metrics["composite_dice"]) == (1.0, 1.0, 1.0)
    assert metrics["cases"][0]["case"] == "case_00061"
    assert metrics["cases"][0]["truth_voxels"] == {"0": 7_453_957, "1": 124_943, "2": 23_276}
    small = np.zeros((4, 4, 4), np.uint8)
    write_volume(tmp_path / "pred" / "prediction_00061.nii.gz", small,
                 Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), KITS_DIRECTION))
    result = CliRunner().invoke(app, ["kits", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth",
                                      str(tmp_path / "truth"), "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 2 and "differs from the ground truth" in result.output


def test_tile_is_resumable_and_indexes_foreground(sample: Path, tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "slices"
    args = ["kits", "tile", "--data", str(sample), "--cache", str(out)]
    assert CliRunner().invoke(app, [*args, "--part", "1/2"]).exit_code == 0
    assert len(list((out / "images").glob("*.npy"))) == 2
    assert CliRunner().invoke(app, args).exit_code == 0
    index = pd.read_csv(out / "index.csv")
    assert sorted(index["case"].unique()) == ["case_00000", "case_00001", "case_00002"]  # test case: no labels
    assert index["has_kidney"].any() and (~index["has_kidney"]).any() and index["has_tumor"].any()
    stamp = (out / "images" / "case_00000.npy").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / "images" / "case_00000.npy").stat().st_mtime_ns == stamp
    images = np.load(out / "images" / "case_00000.npy")
    assert images.dtype == np.float16 and images.min() == pytest.approx((-79 - 101) / 76.9, abs=1e-2)
    result = CliRunner().invoke(app, [*args, "--window", "-100,200"])
    assert result.exit_code == 2 and "window: [-79.0, 304.0] → [-100.0, 200.0]" in result.output
    assert "--overwrite" in result.output


def test_tile_real_labels_on_their_own_grid(realdata: Path, tmp_path: Path) -> None:
    """case_00061's real labels (slices LAST in numpy order) with a CT on the same grid: 29 axial slices cached."""
    import shutil

    real = read_volume(realdata / "kits19" / "case_00061_segmentation.nii.gz")
    folder = tmp_path / "data" / "case_00061"
    hu = np.where(real.array > 0, 180, -1000).astype(np.int16)
    write_volume(folder / "imaging.nii.gz", hu, real.geometry)
    shutil.copy(realdata / "kits19" / "case_00061_segmentation.nii.gz", folder / "segmentation.nii.gz")
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(tmp_path), "--cache", str(tmp_path / "slices")])
    assert result.exit_code == 0, result.output
    labels = np.load(tmp_path / "slices" / "labels" / "case_00061.npy")
    assert labels.shape == (29, 512, 512)
    np.testing.assert_array_equal(labels, np.moveaxis(real.array, 2, 0))
    assert np.bincount(labels.ravel()).tolist() == [7_453_957, 124_943, 23_276]
