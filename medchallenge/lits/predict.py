"""``lits predict`` and ``lits evaluate``: whole slices, NIfTI on the input grid, per-case and global Dice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_models
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.nifti import read_volume, write_volume
from medchallenge.core.parts import select_part
from medchallenge.core.plots import plot_per_case
from medchallenge.core.report import EvaluationReport
from medchallenge.havaei.inference import segment_slices
from medchallenge.lits.data import check_label_map, find_cases, find_segmentations, read_ct
from medchallenge.lits.metrics import LitsScores, lits_case_score
from medchallenge.lits.models import MODELS, N_CLASSES
from medchallenge.lits.preprocess import normalise_ct

# meta every member of an ensemble must share: the same input (one CT channel, the same HU window)
# and the same classes, or averaging their softmax means nothing
SAME_META = ("channels", "label_values", "normalisation", "hu_window")


def predict_lits(checkpoints: Path | Sequence[Path], data: Path, out: Path, device: str = "auto", batch_size: int = 8,
                 part: str | None = None, overwrite: bool = False, test_only: bool = True,
                 tta: bool = False) -> list[Path]:
    """Write each (test) volume's labels {0,1,2} on its grid under the challenge's submission name:
    ``test-volume-N.nii`` → ``test-segmentation-N.nii``, ``volume-N.nii`` → ``segmentation-N.nii``.

    Several checkpoints (files, run folders, cv folders) are an ensemble: their softmax is averaged
    per voxel before the argmax; ``tta`` also averages the three mirrored copies of every slice
    (nnU-Net's mirroring: 4 forward passes per model instead of 1).
    """
    dev = resolve_device(device)
    files = expand_checkpoints([checkpoints] if isinstance(checkpoints, (str, Path)) else checkpoints)
    loaded = load_models(files, MODELS, challenge="lits", expect={"in_channels": 1, "num_classes": N_CLASSES},
                         map_location=dev, same_meta=SAME_META)
    models = [model for model, _ in loaded]
    cases = [c for c in find_cases(data) if c.test or not test_only]
    if not cases:
        raise DataError(data, "no test-volume-N.nii (use --all for the training volumes)")
    cases = select_part(cases, part)
    # an output is kept only when these checkpoints made it with these options (a retrained model redoes it)
    manifest = PredictionManifest(out, files, {"classes": [0, 1, 2], "tta": tta})
    names = [c.prediction_name for c in cases]
    todo = manifest.pending(names, [(Path(out) / n).exists() for n in names], overwrite)
    if len(todo) < len(cases):
        console.log(f"{len(cases) - len(todo)} prediction(s) in {out} already made by this checkpoint: skipped")
    written = []
    for i in console.track(todo, "predict"):
        case, target = cases[i], Path(out) / names[i]
        volume = read_ct(case.volume)
        classes = segment_slices(models, normalise_ct(volume.axial_first()), dev, batch_size, amp_dtype(dev),
                                 allowed=[0, 1, 2], flips=tta)
        write_volume(target, volume.from_axial_first(classes), volume.geometry, compress=False)
        manifest.record(names[i])
        written.append(target)
    console.log(f"wrote {len(written)} prediction(s) to {out}")
    return written


def evaluate_lits(predictions: Path, truth: Path) -> EvaluationReport:
    """Liver and tumour Dice per case (mean) and global, as the official scoring program
    (:mod:`medchallenge.lits.metrics`).

    Every truth file (``segmentation-N`` or ``test-segmentation-N``, ``.nii`` or ``.nii.gz``) needs
    the prediction of the same name: a missing one stops the evaluation, as the official program
    does. Predictions without truth are not scored.
    """
    truth_files = find_segmentations(truth)
    if not truth_files:
        raise DataError(truth, "no segmentation-N.nii / test-segmentation-N.nii ground truth")
    pred_files = find_segmentations(predictions)
    missing = [name for name in truth_files if name not in pred_files]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(Path(predictions) / f"{missing[0]}.nii", f"prediction missing for {missing[0]}{more}"
                                                                 f" (ground truth in {truth})")
    scores, rows = LitsScores(), []
    for name in console.track(sorted(truth_files, key=_order), "evaluate", total=len(truth_files)):
        gt = check_label_map(read_volume(truth_files[name]).array, truth_files[name])
        pred = check_label_map(read_volume(pred_files[name]).array, pred_files[name])
        if gt.shape != pred.shape:
            raise DataError(pred_files[name], f"shape {pred.shape} differs from the truth's {gt.shape}")
        score = lits_case_score(pred, gt)
        scores.add(score)
        rows.append({"case": name, "liver_dice": score.liver_dice, "tumor_dice": score.tumor_dice})
    summary = scores.summary()
    return EvaluationReport("lits", "tumour Dice per case", summary["tumor_dice_per_case"], len(rows),
                            summary={**summary, "cases": rows}, cases=pd.DataFrame(rows), plots=_plots(rows))


def _plots(rows: list[dict[str, Any]]) -> Callable[[Path], None]:
    """Per-case liver and tumour Dice (a box each, the cases as points)."""
    return lambda folder: plot_per_case(rows, ("liver_dice", "tumor_dice"), ["liver", "tumour"],
                                        Path(folder) / "dice_per_case.png", "LiTS")


def _order(name: str) -> tuple[bool, int]:
    """Training cases before test cases, by number."""
    return name.startswith("test-"), int(name.rsplit("-", 1)[1])
