"""``lits predict`` writes the challenge's submission names; colliding inputs are an error, never a skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import save_checkpoint
from medchallenge.core.nifti import Geometry, read_volume, write_volume
from medchallenge.havaei.models import TwoPathCNN


@pytest.fixture(scope="module")
def liver_everywhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LiTS checkpoint whose output layer calls every voxel liver (class 1)."""
    model = TwoPathCNN(1, 3)
    with torch.no_grad():
        model.output_layer.weight.zero_()
        model.output_layer.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    path = tmp_path_factory.mktemp("ckpt") / "liver.pt"
    kwargs = {"in_channels": 1, "num_classes": 3, "pieces": 2, "dropout": 0.0}
    save_checkpoint(path, {"challenge": "lits", "model": {"name": "twopath", "kwargs": kwargs},
                           "state_dict": model.state_dict(), "meta": {}, "config": {}})
    return path


def _ct(path: Path, shape: tuple[int, int, int]) -> None:
    """Signed HU, numpy (slices, rows, cols), axial axis first."""
    hu = np.random.default_rng(0).integers(-1000, 400, shape).astype(np.int16)
    geometry = Geometry((shape[2], shape[1], shape[0]), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(path, hu, geometry, compress=False)


def _predict(checkpoint: Path, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["lits", "predict", "--checkpoint", str(checkpoint), "--data", str(data),
                                      "--out", str(out), "--device", "cpu", *extra])
    return result.exit_code, result.output


def test_test_volumes_get_their_own_submission_names(liver_everywhere: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ct(data / "volume-0.nii", (3, 8, 6))
    _ct(data / "test-volume-0.nii", (2, 5, 7))
    code, output = _predict(liver_everywhere, data, tmp_path / "test-only")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "test-only").glob("*.nii")) == ["test-segmentation-0.nii"]
    code, output = _predict(liver_everywhere, data, tmp_path / "all", "--all")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "all").glob("*.nii")) == ["segmentation-0.nii", "test-segmentation-0.nii"]
    train = read_volume(tmp_path / "all" / "segmentation-0.nii").array
    test = read_volume(tmp_path / "all" / "test-segmentation-0.nii").array
    assert train.shape == (3, 8, 6) and test.shape == (2, 5, 7)  # each is its own volume's prediction
    assert (train == 1).all() and (test == 1).all()


@pytest.mark.parametrize("names", [("volume-1.nii", "volume-01.nii"), ("volume-2.nii", "volume-2.nii.gz"),
                                   ("test-volume-4.nii", "test-volume-004.nii")])
def test_two_inputs_with_one_output_name_are_an_error(liver_everywhere: Path, tmp_path: Path,
                                                      names: tuple[str, str]) -> None:
    data = tmp_path / "data"
    for name in names:
        _ct(data / name, (2, 5, 5))
    code, output = _predict(liver_everywhere, data, tmp_path / "out", "--all")
    assert code == 2, output
    assert "same case" in output and names[0] in output and names[1] in output, output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
