"""``kits evaluate``: official per-case Dice over a folder of ``prediction_XXXXX.nii.gz``.

``--truth`` may be a KiTS ``data/`` folder (``case_XXXXX/segmentation.nii.gz``), the repository
holding it, or a flat folder of ``case_XXXXX.nii.gz`` / ``segmentation_XXXXX.nii.gz`` files. Every
truth case (or those named with ``--cases``) is scored; a missing prediction counts as all
background, as the challenge scored it, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name
from medchallenge.core.nifti import read_volume
from medchallenge.core.report import EvaluationReport
from medchallenge.kits.data import case_name, check_case_name, check_labels, data_root, looks_like_case
from medchallenge.kits.metrics import CaseScore, score_case, summarise

FLAT_PATTERN = re.compile(r"(?:case|segmentation)_([0-9]{5})\.nii(?:\.gz)?")
PREDICTION_PATTERN = re.compile(r"prediction_([0-9]{5})\.nii\.gz")


def truth_files(truth: Path) -> dict[int, Path]:
    """Case number → label file under ``truth`` (either layout).

    Entries named like a case (``case_…``, ``segmentation_…``) must fit the layout's pattern: a
    misnamed truth file is an error (exit 2) naming it, never a case silently left out.
    """
    root = data_root(truth)
    found: dict[int, Path] = {}
    if not root.is_dir():
        raise DataError(root, "truth folder not found")
    for path in sorted(root.iterdir()):
        if path.is_dir() and looks_like_case(path.name):
            number = check_case_name(path.name, root)
            label_file = path / "segmentation.nii.gz"
            if not label_file.is_file():
                continue  # a test case's folder: imaging only
        elif path.is_file() and path.name.lower().startswith(("case_", "segmentation_")):
            check_name(path.name, root, what="truth file", pattern=FLAT_PATTERN)
            number, label_file = int(path.name.split("_", 1)[1][:5]), path
        else:
            continue
        if number in found:
            raise DataError(label_file, f"a second truth file for case_{number:05d} (also {found[number]})")
        found[number] = label_file
    if not found:
        raise DataError(root, "no ground-truth label files (case_XXXXX/segmentation.nii.gz or case_XXXXX.nii.gz)")
    return found


def check_prediction_names(predictions: Path) -> None:
    """Refuse a ``prediction_…`` file not named ``prediction_XXXXX.nii.gz`` (it would be ignored, and
    its case scored as all background)."""
    if not Path(predictions).is_dir():
        return
    for path in sorted(Path(predictions).iterdir()):
        if path.name.lower().startswith("prediction"):
            check_name(path.name, predictions, what="prediction file", pattern=PREDICTION_PATTERN)


def evaluate_folder(predictions: Path, truth: Path, cases: list[int] | None = None) -> tuple[dict, list[CaseScore]]:
    """Score every truth case; returns (summary as printed by ``--json``, per-case scores)."""
    files = truth_files(truth)
    check_prediction_names(predictions)
    numbers = sorted(files) if cases is None else cases
    for number in numbers:
        case_name(number)
    scores = []
    missing = []
    for number in console.track(numbers, "evaluate", total=len(numbers)):
        if number not in files:
            raise DataError(truth, f"no ground truth for {case_name(number)}")
        gt = check_labels(read_volume(files[number]).array, files[number])
        pred_file = Path(predictions) / f"prediction_{number:05d}.nii.gz"
        if pred_file.is_file():
            pred = read_volume(pred_file).array
            if pred.shape != gt.shape:
                raise DataError(pred_file, f"shape {pred.shape} differs from the ground truth's {gt.shape}")
            pred = check_labels(pred, pred_file)
        else:
            missing.append(pred_file.name)
            pred = np.zeros_like(gt)
        scores.append(score_case(f"case_{number:05d}", pred, gt))
    if missing:
        console.warn(f"{len(missing)} prediction(s) missing, scored as all background: {', '.join(missing[:5])}")
    return summarise(scores), scores


METRIC = "composite Dice (mean of kidney and tumour Dice)"


def evaluation_report(summary: dict, scores: list[CaseScore],
                      plots: Callable[[Path], None] | None = None) -> EvaluationReport:
    """The common report: score is the composite Dice; the KiTS keys (per-region means, cases) follow."""
    own = {k: v for k, v in summary.items() if k != "n"}  # n is a common key
    cases = pd.DataFrame([{k: v for k, v in s.as_dict().items() if k != "truth_voxels"} for s in scores],
                         columns=["case", "kidney_dice", "tumor_dice", "composite_dice", "pixel_accuracy"])
    return EvaluationReport("kits", METRIC, summary["composite_dice"], len(scores), own, cases=cases, plots=plots)


def plot_overlays(predictions: Path, truth: Path, scores: list[CaseScore], out: Path, n_cases: int = 4,
                  data: Path | None = None) -> None:
    """Axial overlays (kidney red, tumour blue) of each case's slice with the most tumour: truth | prediction.

    The CT under the labels is ``imaging.nii.gz`` beside the truth file or in ``data``'s case folder
    (black when neither exists).
    """
    from medchallenge.core.plots import overlay_labels, save_image_grid

    files = truth_files(truth)
    colours = {1: (230, 40, 40), 2: (40, 80, 240)}
    images, titles = [], []
    for score in scores[:n_cases]:
        number = int(score.case[5:])
        gt_vol = read_volume(files[number])
        gt = gt_vol.axial_first()
        pred_file = Path(predictions) / f"prediction_{number:05d}.nii.gz"
        pred = read_volume(pred_file).axial_first() if pred_file.is_file() else np.zeros_like(gt)
        k = int(np.argmax((gt == 2).sum(axis=(1, 2)) + 1e-3 * (gt > 0).sum(axis=(1, 2))))
        candidates = [files[number].parent / "imaging.nii.gz"]
        if data is not None:
            candidates.append(data_root(data) / score.case / "imaging.nii.gz")
        imaging = next((c for c in candidates if c.is_file()), None)
        base = np.zeros(gt[k].shape, np.float32)
        if imaging is not None:
            ct = read_volume(imaging)
            if ct.array.shape == gt_vol.array.shape:
                base = ct.axial_first()[k].clip(-200, 300).astype(np.float32)
        images += [overlay_labels(base, gt[k], colours), overlay_labels(base, pred[k], colours)]
        titles += [f"{score.case} slice {k}: truth", f"prediction (kidney {score.kidney_dice:.2f},"
                                                     f" tumour {score.tumor_dice:.2f})"]
    save_image_grid(images, titles, out / "overlays.png", cols=2)
