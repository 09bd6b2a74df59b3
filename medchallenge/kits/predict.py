"""Whole-volume prediction: axial slices in batches through the U-Net, NIfTI on the input grid.

Batching, autocast and the argmax are ``core.inference.segment_batches``: memory is bounded by
the volume as stored (int16 HU), one batch of slice logits and the uint8 label volume, since
slices are normalised batch by batch (``prepare``) and never kept as floats for the whole volume.
Any in-plane size works: the U-Net halves the image ``depth`` times, so :func:`padded` pads each
batch to a multiple of 2**depth with the normalised value of air and crops the logits back.
An ensemble (several checkpoints, or a cv folder) and test-time mirroring (``--tta``: each slice
as is, flipped left-right, up-down and both, nnU-Net's default) average the softmax before the
argmax, through the same ``segment_batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_models
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.inference import Forward, segment_batches
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.nifti import write_volume
from medchallenge.core.parts import select_part
from medchallenge.core.unet import pad_to_multiple
from medchallenge.kits.data import find_cases, read_case
from medchallenge.kits.models import MODELS, NUM_CLASSES
from medchallenge.kits.slices import Normalisation


def padded(model: torch.nn.Module, pad_value: float) -> Forward:
    """``model`` as a forward that takes any H×W: padded to 2**depth multiples, logits cropped back."""
    multiple = 2 ** getattr(model, "depth", 4)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x, (rows, cols) = pad_to_multiple(x, multiple, pad_value)
        return model(x)[:, :, rows, cols]

    return forward


def segment_stack(model: torch.nn.Module, stack: np.ndarray, device: torch.device, batch_size: int = 8,
                  pad_value: float = 0.0, dtype: torch.dtype | None = None,
                  prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Labels (uint8, S×H×W) of an axial stack (S×H×W), normalised already or batch by batch with ``prepare``."""
    return segment_batches(padded(model, pad_value), stack, device, batch_size, dtype, prepare=prepare)


def load_kits_models(checkpoints: Sequence[Path], device: torch.device) -> tuple[list[torch.nn.Module], Normalisation]:
    """Models (eval mode, on ``device``) of one or several KiTS checkpoints and their shared normalisation.

    An ensemble averages softmax over the same input, so every member must have been trained on
    the same CT normalisation (window, mean, std): another one is refused naming the checkpoint.
    """
    loaded = load_models(checkpoints, MODELS, challenge="kits", expect={"in_channels": 1, "num_classes": NUM_CLASSES},
                         map_location=device, same_meta=("normalisation",))
    first = expand_checkpoints(checkpoints)[0]
    try:
        norm = Normalisation(**loaded[0][1]["meta"]["normalisation"])
    except (KeyError, TypeError) as err:
        raise DataError(first, "KiTS checkpoint without its CT normalisation (meta.normalisation)") from err
    return [model for model, _ in loaded], norm


def load_kits_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, Normalisation]:
    """Model (eval mode, on ``device``) and normalisation of a KiTS checkpoint."""
    models, norm = load_kits_models([checkpoint], device)
    return models[0], norm


def predict_cases(checkpoints: Path | Sequence[Path], data: Path, out: Path, cases: list[int] | None = None,
                  device: str = "auto", batch_size: int = 8, part: str | None = None, overwrite: bool = False,
                  tta: bool = False) -> list[Path]:
    """Write ``prediction_XXXXX.nii.gz`` (uint8 {0,1,2}, the input's exact grid) for each case of this part.

    Several checkpoints (an ensemble) and ``tta`` (mirroring) average softmax probabilities before
    the argmax (``core.inference``). A prediction already made by these checkpoints and options
    (``core.manifest``) is skipped unless ``overwrite``; one made by another checkpoint is redone.
    ``part`` (``K/N``) takes every N-th case.
    """
    checkpoints = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    dev = resolve_device(device)
    models, norm = load_kits_models(checkpoints, dev)
    forwards = [padded(model, norm.background) for model in models]
    dtype = amp_dtype(dev)
    # an existing prediction is kept only when these checkpoints (by content) and --tta made it;
    # batch size, device and part do not change the labels, so they are not part of the record
    manifest = PredictionManifest(out, expand_checkpoints(checkpoints), {"tta": tta})
    cases_here = select_part(find_cases(data, cases), part)
    names = [f"prediction_{case.number:05d}.nii.gz" for case in cases_here]
    todo = manifest.pending(names, [(Path(out) / name).exists() for name in names], overwrite)
    written = []
    for i in console.track(todo, "predict", total=len(todo)):
        case, target = cases_here[i], Path(out) / names[i]
        image, _ = read_case(case, with_labels=False, as_float=False)  # HU as stored; normalised per batch
        labels = segment_batches(forwards, image.axial_first(), dev, batch_size, dtype, prepare=norm, flips=tta)
        write_volume(target, image.from_axial_first(labels), image.geometry)
        manifest.record(names[i])
        written.append(target)
    console.log(f"wrote {len(written)} prediction(s) to {out} ({len(cases_here) - len(written)} made by these"
                " checkpoints and options already)")
    return written
