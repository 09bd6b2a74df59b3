"""``brats predict`` and ``brats evaluate``: whole slices through the convolutional output layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medchallenge.brats.data import (
    LABEL_VALUES,
    MODALITIES,
    classes_to_labels,
    find_cases,
    find_truth,
    read_case,
    read_labels,
)
from medchallenge.brats.metrics import REGION_KEYS, region_dice
from medchallenge.brats.models import MODELS, N_CLASSES
from medchallenge.brats.preprocess import normalise_brats
from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_model, load_models
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.nifti import write_volume
from medchallenge.core.parts import select_part
from medchallenge.core.plots import plot_per_case
from medchallenge.core.report import EvaluationReport
from medchallenge.havaei.inference import segment_slices
from medchallenge.havaei.patches import body_mask


def load_brats_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A BraTS model (eval, on ``device``) taking the four modalities, and its checkpoint."""
    return load_model(checkpoint, MODELS, challenge="brats", expect={"in_channels": len(MODALITIES),
                                                                     "num_classes": N_CLASSES},
                      map_location=device)


def load_brats_models(checkpoints: Sequence[Path], device: torch.device) -> list[torch.nn.Module]:
    """The models of an ensemble (files, run folders, a cv folder), eval on ``device``.

    Members must read the same channels normalised the same way (their softmax is averaged over
    the same input); the label convention may differ (the classes are the 2021 values in both).
    """
    loaded = load_models(checkpoints, MODELS, challenge="brats", map_location=device,
                         expect={"in_channels": len(MODALITIES), "num_classes": N_CLASSES},
                         same_meta=("channels", "normalisation"))
    return [model for model, _ in loaded]


def segment_case(model: torch.nn.Module | Sequence[torch.nn.Module], images: np.ndarray, device: torch.device,
                 batch_size: int = 8, convention: str = "brats2021", tta: bool = False,
                 inplace: bool = False) -> np.ndarray:
    """Labels S×H×W (uint8) of ``convention`` of raw C×S×H×W modalities, 0 outside the brain.

    Several models (an ensemble) and ``tta`` (each slice mirrored in W, H and both) average their
    softmax before the argmax. The model only ever saw brain voxels in training (patch centres lie
    in the brain), so its calls where every modality is zero are meaningless; every BraTS pipeline
    masks them out.

    Host memory: with ``inplace`` (float32 ``images``, which it overwrites) the normalised volume is
    the case's one whole copy — ``predict`` does this; the model sees one batch of slices at a time
    and only the uint8 labels and the brain mask are whole-volume besides.
    """
    brain = body_mask(images)  # before normalising: afterwards a brain voxel may be 0 in every channel
    normalised, _ = normalise_brats(images, inplace=inplace and images.dtype == np.float32, brain=brain)
    lut = classes_to_labels(np.arange(N_CLASSES), convention).tolist()  # class index → the input's label value
    labels = segment_slices(model, normalised, device, batch_size, amp_dtype(device), list(LABEL_VALUES), lut,
                            flips=tta)
    labels[~brain] = 0
    return labels


def predict_brats(checkpoint: Path | Sequence[Path], data: Path, out: Path, device: str = "auto",
                  batch_size: int = 8, part: str | None = None, overwrite: bool = False,
                  tta: bool = False) -> list[Path]:
    """Write ``<case>.nii.gz`` on the input grid for every case, labels in the case's convention
    ({0,1,2,4} for the 2021 naming, {0,1,2,3} for the 2023 naming), background outside the brain.

    Several checkpoints (run folders, a cv folder) are an ensemble; ``tta`` mirrors each slice.
    """
    dev = resolve_device(device)
    checkpoints = expand_checkpoints([checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint)
    models = load_brats_models(checkpoints, dev)
    cases = select_part(find_cases(data), part)
    targets = [Path(out) / f"{case.name}.nii.gz" for case in cases]
    # an output is kept only when these checkpoints (by content) and --tta made it (retraining redoes
    # the old model's outputs); batch size, device and part do not change the labels
    manifest = PredictionManifest(out, checkpoints, {"tta": tta})
    todo = manifest.pending([c.name for c in cases], [t.exists() for t in targets], overwrite)
    written = []
    for i in console.track(todo, "predict", total=len(todo)):
        case = cases[i]
        images, reference, _ = read_case(case, with_labels=False)
        labels = segment_case(models, images, dev, batch_size, case.convention, tta, inplace=True)
        del images
        write_volume(targets[i], reference.from_axial_first(labels), reference.geometry)
        manifest.record(case.name)
        written.append(targets[i])
    console.log(f"wrote {len(written)} prediction(s) to {out}"
                + (f"; {len(cases) - len(todo)} made by this checkpoint already" if len(todo) < len(cases) else ""))
    return written


def _prediction_file(predictions: Path, name: str) -> Path:
    """``<name>.nii.gz`` (or ``.nii``) in ``predictions``; a missing one is an error naming it."""
    for path in (Path(predictions) / f"{name}.nii.gz", Path(predictions) / f"{name}.nii"):
        if path.is_file():
            return path
    raise DataError(Path(predictions) / f"{name}.nii.gz", f"prediction missing for case {name}")


def evaluate_brats(predictions: Path, truth: Path) -> EvaluationReport:
    """Dice of WT, TC, ET per case (each case with its convention's regions) and their means; the
    score is the mean of the three.

    Every truth case needs a prediction; prediction and truth labels must be those of the truth's
    convention (a stray label is an error, never background).
    """
    truth_files = find_truth(truth)
    if not truth_files:
        raise DataError(truth, "no <case>/<case>_seg.nii[.gz] or <case>/<case>-seg.nii.gz ground truth")
    rows = []
    for name, (seg, convention) in console.track(list(truth_files.items()), "evaluate", total=len(truth_files)):
        pred_file = _prediction_file(predictions, name)
        gt, pred = read_labels(seg, convention), read_labels(pred_file, convention)
        if gt.shape != pred.shape:
            raise DataError(pred_file, f"shape {pred.shape} differs from the truth's {gt.shape}")
        rows.append({"case": name, "convention": convention, **region_dice(pred, gt, convention)})
    means = {k: float(sum(r[k] for r in rows) / len(rows)) for k in REGION_KEYS}
    return EvaluationReport("brats", "mean Dice of WT, TC and ET", float(np.mean(list(means.values()))), len(rows),
                            summary={**means, "cases": rows}, cases=pd.DataFrame(rows), plots=_plots(rows))


def _plots(rows: list[dict[str, Any]]) -> Callable[[Path], None]:
    """Per-case Dice of each region (a box per region with the cases as points)."""
    return lambda folder: plot_per_case(rows, REGION_KEYS, ["WT", "TC", "ET"], Path(folder) / "dice_per_region.png",
                                        "BraTS per-case Dice", ylabel="Dice")


def ablation_study(checkpoint: Path, data: Path, truth: Path, path_name: str, device: str = "auto",
                   batch_size: int = 8) -> dict[str, Any]:
    """The report's test-time experiment: a path's output replaced by zeros (its contribution removed;
    an identity cannot replace it, the shapes differ), against the intact model, on every case of
    ``data`` that has ground truth in ``truth``. Returns both scores and the drop."""
    from medchallenge.core.errors import OptionError

    if path_name not in ("local", "global"):
        raise OptionError(f"--ablate {path_name}: expected local or global")
    dev = resolve_device(device)
    model, _ = load_brats_model(checkpoint, dev)
    nets = [model.first, model.second] if hasattr(model, "second") else [model]
    truths = find_truth(truth)
    cases = [c for c in find_cases(data) if c.name in truths]
    if not cases:
        raise DataError(truth, f"no ground truth for the cases of {data}")
    scores: dict[str, list[dict[str, float]]] = {"intact": [], "ablated": []}
    for case in console.track(cases, f"ablate {path_name}", total=len(cases)):
        images, reference, _ = read_case(case, with_labels=False)
        seg, convention = truths[case.name]
        gt = np.moveaxis(read_labels(seg, convention), reference.axial_axis, 0)
        for mode in ("intact", "ablated"):
            hooks = []
            if mode == "ablated":
                for net in nets:
                    module = net.local_path if path_name == "local" else net.global_path
                    hooks.append(module.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)))
            pred = segment_case(model, images, dev, batch_size, convention)
            for hook in hooks:
                hook.remove()
            scores[mode].append(region_dice(pred, gt, convention))
    result: dict[str, Any] = {"ablate": path_name, "n": len(cases)}
    for key in REGION_KEYS:
        intact = float(np.mean([s[key] for s in scores["intact"]]))
        ablated = float(np.mean([s[key] for s in scores["ablated"]]))
        result[key] = {"intact": intact, "ablated": ablated, "drop": intact - ablated}
    return result
