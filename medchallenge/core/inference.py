"""Chunked segmentation inference: one helper for every slice/tile-wise ``predict``.

A stack of N items (slices of a volume, tiles of a slide) goes through the model in batches:
each batch is prepared on the CPU (normalisation of stored values, so a raw volume never needs a
float copy), moved to the device, run under autocast, and reduced to uint8 labels there, so host
memory holds only the input as stored, one batch and the label stack. Several models (an
ensemble) and mirroring (test-time flips, nnU-Net's default) average softmax probabilities
before the argmax; a single model without flips takes the argmax of its logits directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from medchallenge.core.device import autocast

Forward = Callable[[torch.Tensor], torch.Tensor]
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 dihedral transforms of the last two axes (k = 0..7: 4 rotations, each mirrored)."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


def undo_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`dihedral` (maps a transformed map back onto the original grid)."""
    y = y.flip(-1) if k >= 4 else y
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


@torch.no_grad()
def mean_probabilities(forwards: Forward | Sequence[Forward], x: torch.Tensor, tta: bool = False,
                       views: int = 8, activation: str = "softmax") -> torch.Tensor:
    """Class probabilities (B×K) averaged over models and, with ``tta``, over dihedral views of ``x``.

    Args:
        forwards: models mapping a batch (…×H×W in its last two axes) to B×K logits.
        x: the batch on the device; the views transform its last two axes.
        tta: average the first ``views`` dihedral transforms (8: rotations and mirrors; 2: identity
            and a mirror) — what a pathology patch's label does not depend on.
        activation: ``softmax`` over K, ``sigmoid`` per output, or ``none`` (regression/ordinal scores).
    """
    forwards = [forwards] if callable(forwards) else list(forwards)
    ks = range(views) if tta else (0,)
    total: torch.Tensor | None = None
    for forward in forwards:
        for k in ks:
            out = forward(dihedral(x, k) if k else x).float()
            if activation == "softmax":
                out = torch.softmax(out, dim=1)
            elif activation == "sigmoid":
                out = torch.sigmoid(out)
            total = out if total is None else total + out
    assert total is not None
    return total / (len(forwards) * len(ks))


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering ``range(n)`` in steps of ``batch_size``."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def class_scores(forwards: Sequence[Forward], x: torch.Tensor, flips: bool = False,
                 allowed: Sequence[int] | None = None) -> torch.Tensor:
    """Scores (B×K×H×W) whose argmax is the decision: logits of one model, else mean softmax.

    Args:
        forwards: models (or wrappers that pad/crop) mapping B×C×H×W to B×K×H×W logits.
        x: the batch on the device.
        flips: also run the three mirrored copies (W, H, both) and average (undone before averaging).
        allowed: class indices the decision may take (others get -inf logits).
    """
    views = FLIPS if flips else ((),)
    single = len(forwards) == 1 and len(views) == 1
    total: torch.Tensor | None = None
    for forward in forwards:
        for dims in views:
            logits = forward(x.flip(dims) if dims else x).float()
            logits = logits.flip(dims) if dims else logits
            if allowed is not None:
                mask = torch.full((logits.shape[1],), float("-inf"), device=logits.device)
                mask[list(allowed)] = 0
                logits = logits + mask[None, :, None, None]
            scores = logits if single else torch.softmax(logits, dim=1)
            total = scores if total is None else total + scores
    assert total is not None
    return total if single else total / (len(forwards) * len(views))


@torch.no_grad()
def segment_batches(forwards: Forward | Sequence[Forward], stack: np.ndarray, device: torch.device,
                    batch_size: int = 8, dtype: torch.dtype | None = None, *,
                    prepare: Callable[[np.ndarray], np.ndarray] | None = None, flips: bool = False,
                    allowed: Sequence[int] | None = None, labels: Sequence[int] | None = None) -> np.ndarray:
    """Labels (uint8, N×H×W) of ``stack`` (N×H×W or N×C×H×W, any dtype), batch by batch.

    Args:
        forwards: one model or several (averaged); each maps B×C×H×W → B×K×H×W logits.
        stack: the items; a 3-D stack gets a channel axis of 1.
        prepare: numpy transform of a batch before it becomes float32 (e.g. HU normalisation).
        flips: test-time mirroring (4 views per model).
        allowed: class indices the argmax may choose.
        labels: label value written for each class index (e.g. ``[0, 1, 2, 4]`` for BraTS 2021).
    """
    forwards = [forwards] if callable(forwards) else list(forwards)
    lut = None if labels is None else torch.as_tensor(list(labels), dtype=torch.uint8, device=device)
    n, (h, w) = stack.shape[0], stack.shape[-2:]
    out = np.empty((n, h, w), dtype=np.uint8)
    for chunk in batch_slices(n, batch_size):
        batch = stack[chunk]
        batch = prepare(batch) if prepare is not None else batch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x[:, None] if x.ndim == 3 else x
        x = x.to(device, non_blocking=True)
        with autocast(device, dtype):
            decision = class_scores(forwards, x, flips, allowed).argmax(dim=1)
        decision = lut[decision] if lut is not None else decision.to(torch.uint8)
        out[chunk] = decision.cpu().numpy()
    return out
