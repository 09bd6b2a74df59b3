"""BraTS 2021 and 2023+ namings and labels, the brain mask of predict, stray labels, case names.

The real case (../shared/realdata/brats-2023: t1c float32, t1n/t2f/t2w float64, labels {0,1,2,3},
43% of the voxels outside the brain) is copied into the 2023 layout ``<case>/<case>-t1c.nii.gz``.
Region Dice is re-implemented here from the organisers' definition: WT/TC/ET = {1,2,4}/{1,4}/{4}
(2021) or {1,2,3}/{1,3}/{3} (2023; rachitsaluja/BraTS-2023-Metrics ``get_tissue_wise_mask``),
both empty → 1 ("Legacy_Dice").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from medchallenge.brats.data import find_cases, read_case
from medchallenge.cli import app
from medchallenge.core.checkpoint import load_checkpoint, save_checkpoint
from medchallenge.core.nifti import Geometry, write_volume
from medchallenge.havaei.models import TwoPathCNN

CASE = "BraTS-GLI-00000-000"
REAL_FILES = {"t1c": "t1c", "t1n": "t1n", "t2f": "t2f", "t2w": "t2w", "seg": "segmentation"}
REGIONS = {"brats2021": {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)},
           "brats2023": {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}}


def organisers_dice(pred: np.ndarray, truth: np.ndarray, convention: str) -> dict[str, float]:
    out = {}
    for region, labels in REGIONS[convention].items():
        p, t = np.isin(pred, labels), np.isin(truth, labels)
        out[f"{region}_dice"] = 1.0 if not p.any() and not t.any() else 2.0 * (p & t).sum() / (p.sum() + t.sum())
    return out


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def constant_checkpoint(path: Path, winner: int) -> Path:
    """A BraTS TwoPathCNN checkpoint whose output layer calls every voxel class ``winner``."""
    model = TwoPathCNN(4, 5)
    with torch.no_grad():
        model.output_layer.weight.zero_()
        model.output_layer.bias.zero_()
        model.output_layer.bias[winner] = 10.0
    kwargs = {"in_channels": 4, "num_classes": 5, "pieces": 2, "dropout": 0.0}
    save_checkpoint(path, {"challenge": "brats", "model": {"name": "twopath", "kwargs": kwargs},
                           "state_dict": model.state_dict(), "meta": {}, "config": {}})
    return path


@pytest.fixture()
def real2023(realdata: Path, tmp_path: Path) -> Path:
    """The real case in the 2023 layout: ``data/<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz``."""
    folder = tmp_path / "data" / CASE
    folder.mkdir(parents=True)
    for suffix, source in REAL_FILES.items():
        shutil.copy(realdata / "brats-2023" / f"{source}.nii.gz", folder / f"{CASE}-{suffix}.nii.gz")
    return tmp_path / "data"


@pytest.fixture()
def slab2023(realdata: Path, tmp_path: Path) -> Path:
    """Axial slices 16–21 of the real case (every label present, 45% outside the brain), in the
    2023 layout, each file keeping its own voxel type and its physical position: the whole case
    takes about a second per slice through the network on a 2-core CPU."""
    folder = tmp_path / "slab" / CASE
    folder.mkdir(parents=True)
    for suffix, source in REAL_FILES.items():
        image = sitk.ReadImage(str(realdata / "brats-2023" / f"{source}.nii.gz"))
        sitk.WriteImage(image[:, :, 16:22], str(folder / f"{CASE}-{suffix}.nii.gz"))
    return tmp_path / "slab"


def _brain(folder: Path, case: str, suffixes: tuple[str, ...], sep: str) -> np.ndarray:
    return np.any([_array(folder / case / f"{case}{sep}{s}.nii.gz") != 0 for s in suffixes], axis=0)


def test_real_2023_case_is_read_with_its_labels(real2023: Path) -> None:
    (case,) = find_cases(real2023)
    assert case.convention == "brats2023"
    assert [p.name.split("-")[-1] for p in case.images] == ["t2f.nii.gz", "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz"]
    images, reference, classes = read_case(case)
    assert images.shape == (4, 48, 96, 64) and images.dtype == np.float32
    np.testing.assert_array_equal(images[2], _array(real2023 / CASE / f"{CASE}-t1c.nii.gz"))  # axial axis is 0
    seg = _array(real2023 / CASE / f"{CASE}-seg.nii.gz")
    # model classes are the 2021 values: NETC 1 → 1, SNFH 2 → 2, ET 3 → 4
    np.testing.assert_array_equal(classes, np.select([seg == 1, seg == 2, seg == 3], [1, 2, 4], 0))
    assert np.bincount(classes.ravel(), minlength=5).tolist() == [191208, 11564, 74248, 0, 17892]


def test_real_2023_case_tile_train_predict_evaluate(slab2023: Path, tmp_path: Path) -> None:
    real2023 = slab2023
    second = real2023 / "BraTS-GLI-00001-000"  # a second case (the same volumes) so training has a split
    second.mkdir()
    for path in (real2023 / CASE).iterdir():
        shutil.copy(path, second / path.name.replace(CASE, second.name))
    cache = tmp_path / "patches"
    code, output = _run("brats", "tile", "--data", str(real2023), "--cache", str(cache))
    assert code == 0, output
    meta = json.loads((cache / "meta.json").read_text())["settings"]
    assert meta["convention"] == "brats2023" and meta["label_values"] == [0, 1, 2, 3]
    seg = _array(real2023 / CASE / f"{CASE}-seg.nii.gz")
    assert seg.shape == (6, 96, 64) and (np.load(cache / "labels" / f"{CASE}.npy") == 4).sum() == (seg == 3).sum() > 0
    code, output = _run("brats", "train", "--cache", str(cache), "--out", str(tmp_path / "run"), "--epochs", "1",
                        "--patches-per-epoch", "64", "--batch-size", "32", "--device", "cpu", "--workers", "0")
    assert code == 0, output
    assert load_checkpoint(tmp_path / "run" / "best.pt")["meta"]["convention"] == "brats2023"
    shutil.rmtree(second)  # predict and score the real case only (time)
    code, output = _run("brats", "predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data",
                        str(real2023), "--out", str(tmp_path / "pred"), "--device", "cpu")
    assert code == 0, output
    pred = _array(tmp_path / "pred" / f"{CASE}.nii.gz")
    assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3}  # the input's convention
    assert not pred[~_brain(real2023, CASE, ("t1c", "t1n", "t2f", "t2w"), "-")].any()
    code, output = _run("brats", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth", str(real2023),
                        "--json")
    assert code == 0, output
    row = next(r for r in json.loads(output)["cases"] if r["case"] == CASE)
    expected = organisers_dice(pred, _array(real2023 / CASE / f"{CASE}-seg.nii.gz"), "brats2023")
    assert {k: row[k] for k in expected} == pytest.approx(expected)


def test_predict_is_background_outside_the_brain_in_the_input_convention(slab2023: Path, tmp_path: Path) -> None:
    real2023 = slab2023
    checkpoint = constant_checkpoint(tmp_path / "et.pt", winner=4)  # enhancing tumour everywhere
    code, output = _run("brats", "predict", "--checkpoint", str(checkpoint), "--data", str(real2023), "--out",
                        str(tmp_path / "pred"), "--device", "cpu")
    assert code == 0, output
    brain = _brain(real2023, CASE, ("t1c", "t1n", "t2f", "t2w"), "-")
    assert 0.4 < 1 - brain.mean() < 0.5  # 45% outside the brain
    pred = _array(tmp_path / "pred" / f"{CASE}.nii.gz")
    np.testing.assert_array_equal(pred, np.where(brain, 3, 0))  # ET is 3 in 2023 files, nothing outside
    code, output = _run("brats", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth", str(real2023),
                        "--json")
    assert code == 0, output
    metrics = json.loads(output)
    expected = organisers_dice(pred, _array(real2023 / CASE / f"{CASE}-seg.nii.gz"), "brats2023")
    assert metrics["cases"][0]["convention"] == "brats2023"
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)


GEOMETRY = Geometry((24, 20, 6), (1.0, 1.0, 1.0), (0.0, -239.0, 0.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))


def _hand_built_2021(root: Path, name: str = "case_001", seg: np.ndarray | None = None) -> np.ndarray:
    """A 2021 case: an ellipse of brain in a 6×20×24 volume (numpy order), zero elsewhere."""
    zz, yy, xx = np.ogrid[:6, :20, :24]
    brain = ((yy - 10) / 7) ** 2 + ((xx - 12) / 9) ** 2 <= 1
    brain = np.broadcast_to(brain, (6, 20, 24)) & (zz > 0)
    rng = np.random.default_rng(0)
    for k, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        image = np.where(brain, rng.uniform(50, 500, brain.shape), 0).astype(np.int16)
        if k == 1:
            image[0, 0, 0] = 7  # one voxel only T1 sees: still brain
        write_volume(root / name / f"{name}_{modality}.nii.gz", image, GEOMETRY)
    if seg is not None:
        write_volume(root / name / f"{name}_seg.nii.gz", seg.astype(np.uint8), GEOMETRY)
    mask = brain.copy()
    mask[0, 0, 0] = True
    return mask


def test_hand_built_2021_case_predicts_nothing_outside_the_brain(tmp_path: Path) -> None:
    brain = _hand_built_2021(tmp_path / "data")
    checkpoint = constant_checkpoint(tmp_path / "edema.pt", winner=2)
    code, output = _run("brats", "predict", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "pred"), "--device", "cpu")
    assert code == 0, output
    np.testing.assert_array_equal(_array(tmp_path / "pred" / "case_001.nii.gz"), np.where(brain, 2, 0))
    constant_checkpoint(tmp_path / "et.pt", winner=4)
    code, output = _run("brats", "predict", "--checkpoint", str(tmp_path / "et.pt"), "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "pred4"), "--device", "cpu")
    assert code == 0, output
    np.testing.assert_array_equal(_array(tmp_path / "pred4" / "case_001.nii.gz"), np.where(brain, 4, 0))  # 2021: 4


def _truth_and_pred(tmp_path: Path, truth: np.ndarray, pred: np.ndarray, sep: str = "_") -> tuple[Path, Path]:
    write_volume(tmp_path / "truth" / "c1" / f"c1{sep}seg.nii.gz", truth.astype(np.uint8), GEOMETRY)
    write_volume(tmp_path / "pred" / "c1.nii.gz", pred.astype(np.uint8), GEOMETRY)
    return tmp_path / "pred", tmp_path / "truth"


@pytest.mark.parametrize(("sep", "truth_label", "pred_label", "bad_file", "bad"), [
    ("_", 4, 3, "c1.nii.gz", "[3]"),  # BraTS 2023 ET in a 2021 prediction
    ("_", 7, 4, "c1_seg.nii.gz", "[7]"),  # a stray label in the truth
    ("-", 3, 4, "c1.nii.gz", "[4]"),  # a 2021 ET in a 2023 prediction
    ("-", 3, 9, "c1.nii.gz", "[9]"),
])
def test_labels_outside_the_convention_are_an_error(tmp_path: Path, sep: str, truth_label: int, pred_label: int,
                                                     bad_file: str, bad: str) -> None:
    truth = np.zeros((6, 20, 24), np.uint8)
    truth[2, 5:9, 5:9] = truth_label
    truth[2, 9:12, 5:9] = 1
    pred = truth.copy()
    pred[2, 5:9, 5:9] = pred_label
    code, output = _run("brats", "evaluate", "--predictions", str(_truth_and_pred(tmp_path, truth, pred, sep)[0]),
                        "--truth", str(tmp_path / "truth"))
    assert code == 2, output
    assert bad_file in output and bad in output, output


@pytest.mark.parametrize(("sep", "convention"), [("_", "brats2021"), ("-", "brats2023")])
def test_evaluate_scores_each_convention_with_its_regions(tmp_path: Path, sep: str, convention: str) -> None:
    rng = np.random.default_rng(3)
    labels = REGIONS[convention]["wt"]
    truth = rng.choice((0, *labels), size=(6, 20, 24), p=[0.7, 0.1, 0.1, 0.1])
    pred = np.where(rng.random(truth.shape) < 0.3, rng.choice((0, *labels), size=truth.shape), truth)
    code, output = _run("brats", "evaluate", "--predictions", str(_truth_and_pred(tmp_path, truth, pred, sep)[0]),
                        "--truth", str(tmp_path / "truth"), "--json")
    assert code == 0, output
    metrics = json.loads(output)
    expected = organisers_dice(pred, truth, convention)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["cases"][0]["convention"] == convention


def test_case_folder_names_are_checked(tmp_path: Path) -> None:
    _hand_built_2021(tmp_path / "data", name="a..b", seg=np.zeros((6, 20, 24)))
    code, output = _run("brats", "tile", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"))
    assert code == 2 and "a..b" in output and "plain names" in output, output
    truth = np.zeros((6, 20, 24), np.uint8)
    write_volume(tmp_path / "truth" / "x..y" / "x..y_seg.nii.gz", truth, GEOMETRY)
    code, output = _run("brats", "evaluate", "--predictions", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"))
    assert code == 2 and "x..y" in output and "plain names" in output, output


def test_mixed_namings_in_one_dataset_are_refused_by_tile(real2023: Path, tmp_path: Path) -> None:
    _hand_built_2021(real2023, seg=np.zeros((6, 20, 24)))
    code, output = _run("brats", "tile", "--data", str(real2023), "--cache", str(tmp_path / "cache"))
    assert code == 2 and "2021 and the 2023" in output, output


def test_a_cache_keeps_one_convention(real2023: Path, tmp_path: Path) -> None:
    _hand_built_2021(tmp_path / "old", seg=np.zeros((6, 20, 24)))
    cache = tmp_path / "cache"
    code, output = _run("brats", "tile", "--data", str(tmp_path / "old"), "--cache", str(cache))
    assert code == 0, output
    assert json.loads((cache / "meta.json").read_text())["settings"]["convention"] == "brats2021"
    code, output = _run("brats", "tile", "--data", str(real2023), "--cache", str(cache))
    assert code == 2 and "meta.json" in output and "brats2023" in output, output
    assert not (cache / "images" / f"{CASE}.npy").exists()
