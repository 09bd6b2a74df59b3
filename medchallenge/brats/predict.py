"""``brats predict`` and ``brats evaluate``: whole slices through the convolutional output layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medchallenge.brats.data import find_cases, read_case
from medchallenge.brats.metrics import region_dice
from medchallenge.brats.models import build_model
from medchallenge.brats.patches import normalise_brats
from medchallenge.brats.train import segment_slices
from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import read_volume, write_volume
from medchallenge.core.parts import select_part

MODELS = ["twopath", "inputcascade"]


def load_model(checkpoint: Path, challenge: str, device: torch.device, in_channels: int) -> tuple[torch.nn.Module, dict]:
    """Model (eval, on ``device``) and checkpoint of ``challenge``; the input channels must match."""
    state = load_checkpoint(checkpoint, challenge=challenge, models=MODELS)
    if state["model"]["kwargs"]["in_channels"] != in_channels:
        raise DataError(checkpoint, f"model takes {state['model']['kwargs']['in_channels']} input channel(s),"
                                    f" the data has {in_channels}")
    model = build_model(state["model"])
    load_state_dict_checked(model, state["state_dict"], checkpoint)
    return model.to(device).eval(), state


def predict_brats(checkpoint: Path, data: Path, out: Path, device: str = "auto", batch_size: int = 8,
                  part: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write ``<case>.nii.gz`` (labels {0,1,2,4}, the input grid) for every case."""
    dev = resolve_device(device)
    model, _ = load_model(checkpoint, "brats", dev, 4)
    written = []
    cases = select_part(find_cases(data), part)
    for case in console.track(cases, "predict", total=len(cases)):
        target = Path(out) / f"{case.name}.nii.gz"
        if target.exists() and not overwrite:
            continue
        images, reference, _ = read_case(case, with_labels=False)
        normalised, _ = normalise_brats(images)
        classes = segment_slices(model, normalised, dev, batch_size, amp_dtype(dev), [0, 1, 2, 4])
        write_volume(target, reference.from_axial_first(classes), reference.geometry)
        written.append(target)
    console.log(f"wrote {len(written)} prediction(s) to {out}")
    return written


def evaluate_brats(predictions: Path, truth: Path) -> dict[str, Any]:
    """Dice of WT, TC, ET per case and their means; every truth case needs a prediction."""
    truth_files = sorted(Path(truth).glob("*/*_seg.nii*"))
    if not truth_files:
        raise DataError(truth, "no <case>/<case>_seg.nii[.gz] ground truth")
    rows = []
    for seg in console.track(truth_files, "evaluate", total=len(truth_files)):
        name = seg.parent.name
        pred_file = next((p for p in (Path(predictions) / f"{name}.nii.gz", Path(predictions) / f"{name}.nii")
                          if p.is_file()), None)
        if pred_file is None:
            raise DataError(Path(predictions) / f"{name}.nii.gz", "prediction missing")
        gt, pred = read_volume(seg).array, read_volume(pred_file).array
        if gt.shape != pred.shape:
            raise DataError(pred_file, f"shape {pred.shape} differs from the truth's {gt.shape}")
        rows.append({"case": name, **region_dice(pred, gt)})
    return {**{k: float(np.mean([r[k] for r in rows])) for k in ("wt_dice", "tc_dice", "et_dice")},
            "n": len(rows), "cases": rows}


def ablation_study(checkpoint: Path, data: Path, truth: Path, path_name: str, device: str = "auto",
                   batch_size: int = 8) -> dict[str, Any]:
    """The report's test-time experiment: a path's output replaced by zeros (its contribution removed;
    an identity cannot replace it, the shapes differ), against the intact model, on every case of
    ``data`` that has ground truth in ``truth``. Returns both scores and the drop."""
    from medchallenge.core.errors import OptionError

    if path_name not in ("local", "global"):
        raise OptionError(f"--ablate {path_name}: expected local or global")
    dev = resolve_device(device)
    model, _ = load_model(checkpoint, "brats", dev, 4)
    nets = [model.first, model.second] if hasattr(model, "second") else [model]
    truths = {p.parent.name: p for p in Path(truth).glob("*/*_seg.nii*")}
    cases = [c for c in find_cases(data) if c.name in truths]
    if not cases:
        raise DataError(truth, f"no ground truth for the cases of {data}")
    scores: dict[str, list[dict[str, float]]] = {"intact": [], "ablated": []}
    for case in console.track(cases, f"ablate {path_name}", total=len(cases)):
        images, _, _ = read_case(case, with_labels=False)
        normalised, _ = normalise_brats(images)
        gt = np.ascontiguousarray(read_volume(truths[case.name]).axial_first())
        for mode in ("intact", "ablated"):
            hooks = []
            if mode == "ablated":
                for net in nets:
                    module = net.local_path if path_name == "local" else net.global_path
                    hooks.append(module.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)))
            pred = segment_slices(model, normalised, dev, batch_size, amp_dtype(dev), [0, 1, 2, 4])
            for hook in hooks:
                hook.remove()
            scores[mode].append(region_dice(pred, gt))
    result: dict[str, Any] = {"ablate": path_name, "n": len(cases)}
    for key in ("wt_dice", "tc_dice", "et_dice"):
        intact = float(np.mean([s[key] for s in scores["intact"]]))
        ablated = float(np.mean([s[key] for s in scores["ablated"]]))
        result[key] = {"intact": intact, "ablated": ablated, "drop": intact - ablated}
    return result
