"""KiTS end to end through the CLI, geometry of predictions, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.nifti import Geometry, read_geometry, read_volume, write_volume
from medchallenge.kits.data import find_cases, read_case

pytestmark = pytest.mark.slow


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits")
    _ok(["kits", "sample", "--out", str(root), "--n-cases", "12", "--size", "96"])
    _ok(["kits", "tile", "--data", str(root), "--cache", str(root / "slices"), "--workers", "2"])
    _ok(["kits", "train", "--cache", str(root / "slices"), "--out", str(root / "run"), "--epochs", "8",
         "--batch-size", "8", "--lr", "0.002", "--patch-size", "96", "--depth", "3", "--width", "16", "--batch-norm",
         "--loss", "dice-ce", "--oversample", "0.5", "--device", "cpu", "--workers", "0"])
    _ok(["kits", "predict", "--checkpoint", str(root / "run" / "best.pt"), "--data", str(root), "--out",
         str(root / "pred"), "--cases", "210-212", "--device", "cpu"])
    return root


def test_held_out_dice_beats_background(run: Path) -> None:
    out = _ok(["kits", "evaluate", "--predictions", str(run / "pred"), "--truth", str(run / "answers"), "--json",
               "--plots", "--data", str(run), "--out", str(run / "ev")])
    metrics = json.loads(out)
    assert metrics["n"] == 3 and [c["case"] for c in metrics["cases"]] == ["case_00210", "case_00211", "case_00212"]
    assert metrics["kidney_dice"] > 0.5, metrics  # all background scores 0
    assert (run / "ev" / "overlays.png").is_file()
    assert (run / "ev" / "cases.csv").is_file()


def test_predictions_keep_the_input_geometry(run: Path) -> None:
    for number in (210, 211, 212):
        image = read_geometry(run / "data" / f"case_{number:05d}" / "imaging.nii.gz")
        pred = read_volume(run / "pred" / f"prediction_{number:05d}.nii.gz")
        assert pred.geometry == image and pred.array.dtype == np.uint8 and pred.array.max() <= 2


def test_predict_skips_finished_and_handles_other_sizes(run: Path, tmp_path: Path) -> None:
    before = (run / "pred" / "prediction_00210.nii.gz").stat().st_mtime_ns
    _ok(["kits", "predict", "--checkpoint", str(run / "run" / "best.pt"), "--data", str(run), "--out",
         str(run / "pred"), "--cases", "210", "--device", "cpu"])
    assert (run / "pred" / "prediction_00210.nii.gz").stat().st_mtime_ns == before
    # a CT with the axial axis first in numpy order and an odd in-plane size
    ct = np.full((7, 50, 37), -1000, np.int16)
    geometry = Geometry(size=(37, 50, 7), spacing=(0.8, 0.8, 3.0), origin=(1.0, 2.0, 3.0),
                        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    write_volume(tmp_path / "data" / "case_00300" / "imaging.nii.gz", ct, geometry)
    _ok(["kits", "predict", "--checkpoint", str(run / "run" / "best.pt"), "--data", str(tmp_path), "--out",
         str(tmp_path / "pred"), "--device", "cpu"])
    assert read_geometry(tmp_path / "pred" / "prediction_00300.nii.gz").same_grid(geometry, tol=1e-6)


def test_missing_prediction_counts_as_background(run: Path) -> None:
    result = CliRunner().invoke(app, ["kits", "evaluate", "--predictions", str(run / "pred"), "--truth",
                                      str(run / "data"), "--cases", "0", "--json",
                                      "--out", str(run / "ev0")])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["kidney_dice"] == 0.0


def test_bad_input_exit_2(run: Path, tmp_path: Path) -> None:
    case = find_cases(run, [0])[0]
    image, labels = read_case(case)
    bad = tmp_path / "bad" / "data"
    # labels outside {0,1,2}
    folder = bad / "case_00000"
    write_volume(folder / "imaging.nii.gz", image.array.astype(np.int16), image.geometry)
    write_volume(folder / "segmentation.nii.gz", (labels * 2).astype(np.uint8), image.geometry)
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(bad.parent), "--cache", str(tmp_path / "s")])
    assert result.exit_code == 2 and "outside {0, 1, 2}" in result.output
    # segmentation on another grid
    write_volume(folder / "segmentation.nii.gz", labels[:-1].astype(np.uint8),
                 Geometry((*image.geometry.size[:2], image.geometry.size[2] - 1), *[getattr(image.geometry, k)
                          for k in ("spacing", "origin", "direction")]))
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(bad.parent), "--cache", str(tmp_path / "s")])
    assert result.exit_code == 2 and "grid differs" in result.output
    # a case folder without imaging, and a truncated file
    (bad / "case_00001").mkdir()
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(bad.parent), "--cache", str(tmp_path / "s")])
    assert result.exit_code == 2 and "without imaging" in result.output
    (bad / "case_00001").rmdir()
    data = (folder / "imaging.nii.gz").read_bytes()
    (folder / "imaging.nii.gz").write_bytes(data[: len(data) // 2])
    result = CliRunner().invoke(app, ["kits", "tile", "--data", str(bad.parent), "--cache", str(tmp_path / "s")])
    assert result.exit_code == 2 and "truncated" in result.output
    result = CliRunner().invoke(app, ["kits", "predict", "--checkpoint", str(tmp_path / "none.pt"), "--data",
                                      str(run)])
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_4d_input_is_an_error(realdata: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "case_00000"
    folder.mkdir(parents=True)
    import gzip

    (folder / "imaging.nii.gz").write_bytes(gzip.compress((realdata / "nifti-quirks" / "functional.nii").read_bytes()))
    from medchallenge.core.errors import DataError

    with pytest.raises(DataError, match="4-D"):
        read_case(find_cases(tmp_path)[0])
