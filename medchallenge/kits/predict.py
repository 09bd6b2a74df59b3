"""Whole-volume prediction: axial slices in batches through the U-Net, NIfTI on the input grid.

Memory is bounded by the volume as stored (int16 HU), one batch of slice probabilities and the
uint8 label volume: slices are normalised and logits reduced to labels batch by batch, never
kept for the whole volume. Any in-plane size works:
slices are padded to a multiple of 2**depth with the normalised value of air and cropped back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.nifti import write_volume
from medchallenge.core.parts import select_part
from medchallenge.core.unet import UNet2d, pad_to_multiple
from medchallenge.kits.data import find_cases, read_case
from medchallenge.kits.models import MODELS, build_model
from medchallenge.kits.slices import Normalisation


@torch.no_grad()
def segment_stack(model: torch.nn.Module, stack: np.ndarray, device: torch.device, batch_size: int = 8,
                  pad_value: float = 0.0, dtype: torch.dtype | None = None,
                  transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Labels (uint8, S×H×W) of an axial stack (S×H×W), normalised or normalised batch by batch
    with ``transform`` (so a raw int16 volume never needs a float copy)."""
    multiple = 2 ** getattr(model, "depth", 4)
    out = np.empty(stack.shape, dtype=np.uint8)
    for start in range(0, stack.shape[0], batch_size):
        chunk = stack[start : start + batch_size]
        chunk = transform(chunk) if transform is not None else chunk
        batch = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        x, (rows, cols) = pad_to_multiple(batch[:, None].to(device, non_blocking=True), multiple, pad_value)
        with autocast(device, dtype):
            logits = model(x)
        out[start : start + batch_size] = logits[:, :, rows, cols].argmax(dim=1).to(torch.uint8).cpu().numpy()
    return out


def load_model(checkpoint: Path, device: torch.device) -> tuple[UNet2d, Normalisation]:
    """Model (eval mode, on ``device``) and normalisation of a KiTS checkpoint."""
    state = load_checkpoint(checkpoint, challenge="kits", models=list(MODELS))
    model = build_model(state["model"])
    load_state_dict_checked(model, state["state_dict"], checkpoint)
    norm = Normalisation(**state["meta"]["normalisation"])
    return model.to(device).eval(), norm


def predict_cases(checkpoint: Path, data: Path, out: Path, cases: list[int] | None = None, device: str = "auto",
                  batch_size: int = 8, part: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write ``prediction_XXXXX.nii.gz`` (uint8 {0,1,2}, the input's exact grid) for each case."""
    dev = resolve_device(device)
    model, norm = load_model(checkpoint, dev)
    dtype = amp_dtype(dev)
    written = []
    todo = select_part(find_cases(data, cases), part)
    for case in console.track(todo, "predict", total=len(todo)):
        target = Path(out) / f"prediction_{case.number:05d}.nii.gz"
        if target.exists() and not overwrite:
            continue
        image, _ = read_case(case, with_labels=False, as_float=False)  # HU as stored; normalised per batch
        labels = segment_stack(model, image.axial_first(), dev, batch_size, norm.background, dtype, transform=norm)
        write_volume(target, image.from_axial_first(labels), image.geometry)
        written.append(target)
    console.log(f"wrote {len(written)} prediction(s) to {out} ({len(todo) - len(written)} already there)")
    return written
