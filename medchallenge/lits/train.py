"""LiTS: preprocessing, and training the Havaei models by transfer from a BraTS checkpoint.

Input mismatch (4 MRI channels → 1 CT channel): every convolution that sees the image gets, as
its single input filter, the SUM of its four pretrained modality filters — exactly the response
the BraTS network would give if the CT were fed in all four channels, so the pretrained features
start where they were. In an InputCascadeCNN the second net's class-map inputs are mapped from
BraTS classes (0 background, 2 edema, 4 enhancing) to LiTS (0 background, 1 liver, 2 tumour).
The output layer is re-created for 3 classes. ``--transfer``: ``local`` (the local path and the
output layer train), ``global`` (global path + output), ``both`` (both paths + output; for an
InputCascadeCNN, those of the second net), ``e2e`` (everything fine-tuned), ``none`` (from
scratch, no BraTS weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medchallenge.brats.models import InputCascadeCNN, MaxoutConv2d, TwoPathCNN, build_model, path_parameters
from medchallenge.brats.patches import run_cases, write_case
from medchallenge.brats.train import HavaeiOptions, HavaeiTrainer
from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.errors import DataError, OptionError
from medchallenge.lits.data import LitsCase, find_cases, read_ct, read_labels
from medchallenge.lits.metrics import lits_case_score

HU_WINDOW = (-200.0, 250.0)
TRANSFERS = ("local", "global", "both", "e2e", "none")
BRATS_TO_LITS_CLASSES = [0, 2, 4]


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """HU clipped to [−200, 250] and scaled to about [−2, 2]; 1×S×H×W float32 from S×H×W."""
    low, high = HU_WINDOW
    return ((np.clip(hu, low, high) - (low + high) / 2) / ((high - low) / 4))[None].astype(np.float32)


class _TileJob:
    def __init__(self, cases: dict[str, LitsCase], out: Path) -> None:
        self.cases, self.out = cases, out

    def __call__(self, name: str) -> dict[str, Any]:
        case = self.cases[name]
        volume = read_ct(case.volume)
        labels = np.moveaxis(read_labels(case, volume), volume.axial_axis, 0)
        hu = volume.axial_first()
        write_case(self.out, name, normalise_ct(hu), labels, hu > -500, 3)
        return {"hu_min": float(hu.min()), "hu_max": float(hu.max())}


def tile_lits(data: Path, out: Path, workers: int = 0, part: str | None = None, overwrite: bool = False) -> dict:
    """Normalise every labelled volume and index its voxels by class."""
    cases = {c.name: c for c in find_cases(data) if c.segmentation is not None}
    if not cases:
        raise DataError(data, "no volume-N.nii with a segmentation-N.nii to train on")
    meta = {"challenge": "lits", "channels": ["ct"], "class_values": [0, 1, 2], "label_values": [0, 1, 2],
            "normalisation": f"HU clipped to {list(HU_WINDOW)}, (x - 25) / 112.5"}
    return run_cases(Path(out), list(cases), _TileJob(cases, Path(out)), meta, workers, part, overwrite)


@torch.no_grad()
def adapt_input_layer(conv: MaxoutConv2d, class_maps: int = 0, brats_classes: int = 5) -> None:
    """Replace the 4 MRI input filters by their sum; map class-map inputs BraTS → LiTS (cascade)."""
    weight = conv.conv.weight  # out × (4 [+ 5]) × k × k
    image = weight[:, :4].sum(dim=1, keepdim=True)
    parts = [image]
    if class_maps:
        maps = weight[:, 4 : 4 + brats_classes]
        parts.append(maps[:, BRATS_TO_LITS_CLASSES])
    conv.conv.weight = nn.Parameter(torch.cat(parts, dim=1).contiguous())
    conv.conv.in_channels = conv.conv.weight.shape[1]


def transfer_from_brats(model: nn.Module, brats_state: dict[str, Any]) -> None:
    """Load BraTS weights into a 1-channel, 3-class LiTS model of the same architecture.

    The input layers are adapted (:func:`adapt_input_layer`); the final output layer keeps its fresh
    initialisation; a cascade's first output layer (feeding the second net) keeps the BraTS filters
    of the classes mapped to LiTS.
    """
    source = build_model(brats_state["model"])
    source.load_state_dict(brats_state["state_dict"])
    cascade = isinstance(source, InputCascadeCNN)
    for net, maps in ([(source.first, 0), (source.second, 5)] if cascade else [(source, 0)]):
        adapt_input_layer(net.local_path[0], maps)
        adapt_input_layer(net.global_path[0], maps)
    final = "second.output_layer." if cascade else "output_layer."
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(final)}
    if cascade:
        for key in ("first.output_layer.weight", "first.output_layer.bias"):
            state[key] = state[key][BRATS_TO_LITS_CLASSES]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(final) for k in missing):
        raise DataError(None, f"BraTS weights do not fit the LiTS model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def set_trainable(model: nn.Module, transfer: str) -> None:
    """Freeze per ``--transfer`` (see the module docstring)."""
    if transfer in ("e2e", "none"):
        for p in model.parameters():
            p.requires_grad = True
        return
    for p in model.parameters():
        p.requires_grad = False
    net = model.second if isinstance(model, InputCascadeCNN) else model
    assert isinstance(net, TwoPathCNN)
    parts = {"local": [net.local_path], "global": [net.global_path], "both": [net.local_path, net.global_path]}
    for module in [*parts[transfer], net.output_layer]:
        for p in module.parameters():
            p.requires_grad = True


@dataclass
class LitsOptions(HavaeiOptions):
    """HavaeiOptions plus the transfer setup."""

    transfer: str = "both"


class LitsTrainer(HavaeiTrainer):
    """Liver and tumour by transfer; best checkpoint by the mean of liver and tumour Dice."""

    challenge = "lits"
    n_classes = 3
    allowed_classes = [0, 1, 2]

    def __init__(self, config: Any, options: LitsOptions) -> None:
        if options.transfer not in TRANSFERS:
            raise OptionError(f"--transfer {options.transfer}: expected one of {', '.join(TRANSFERS)}")
        if options.transfer != "none" and options.from_checkpoint is None:
            raise OptionError(f"--transfer {options.transfer} needs --from BRATS_RUN/best.pt (or --transfer none)")
        super().__init__(config, options)
        self.transfer = options.transfer

    def build_model(self) -> nn.Module:
        model = build_model(self.model_spec())
        o = self.options
        if o.from_checkpoint is not None and o.transfer != "none":
            state = load_checkpoint(o.from_checkpoint, models=[o.model])
            if state["challenge"] == "brats":
                transfer_from_brats(model, state)
            elif state["challenge"] == "lits":
                model.load_state_dict(state["state_dict"])
            else:
                raise DataError(o.from_checkpoint, f"a {state['challenge']} checkpoint: expected brats or lits")
        set_trainable(model, "e2e" if o.transfer == "none" else o.transfer)
        if o.phase == 2:
            for p in model.parameters():
                p.requires_grad = False
            for p in path_parameters(model)["output"]:
                p.requires_grad = True
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        console.log(f"--transfer {o.transfer}: {n:,} trainable parameters")
        return model

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**super().checkpoint_meta(), "transfer": self.options.transfer, "hu_window": list(HU_WINDOW)}

    def score_case(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """The official per-case rule (:mod:`medchallenge.lits.metrics`), so the best checkpoint is
        the best by the challenge's score."""
        score = lits_case_score(pred, truth)
        return {"liver_dice": score.liver_dice, "tumor_dice": score.tumor_dice}

    def restrict(self, pred: np.ndarray, images: np.ndarray) -> None:
        """CT has no brain mask: predictions are scored as they are."""
