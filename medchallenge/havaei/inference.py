"""Whole-slice segmentation with Havaei models, through :func:`medchallenge.core.inference.segment_batches`.

One model, or an ensemble (``predict --checkpoint A --checkpoint B``), with or without test-time
mirroring (``--tta``): several models or views average their softmax before the argmax.

All convolutions are valid, so a slice padded with zeros by half the receptive field on every
side (16 px for TwoPathCNN, 32 for InputCascadeCNN) comes out at the input's size: the padding
happens inside the forward callable, batch by batch, so no padded copy of a volume exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medchallenge.core.inference import segment_batches


def padded_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` on zero-padded input: B×C×H×W → B×K×H×W logits."""
    pad = model.receptive_field // 2

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(F.pad(x, (pad, pad, pad, pad)))

    return forward


def segment_slices(model: nn.Module | Sequence[nn.Module], images: np.ndarray, device: torch.device,
                   batch_size: int = 8, dtype: torch.dtype | None = None, allowed: Sequence[int] | None = None,
                   labels: Sequence[int] | None = None, flips: bool = False) -> np.ndarray:
    """Class per voxel (S×H×W uint8) of C×S×H×W normalised images (any float dtype, a memmap is fine).

    Args:
        model: one model, or several (an ensemble: softmax averaged before the argmax).
        allowed: class indices the argmax may choose (BraTS: 0, 1, 2, 4 — class 3 is unused).
        labels: label value written for each class index (default: the class index itself).
        flips: test-time mirroring (nnU-Net's): each slice also mirrored in W, H and both, the
            softmax of the four views (of every model) averaged; 4× the cost.
    """
    models = [model] if isinstance(model, nn.Module) else list(model)
    stack = np.swapaxes(images, 0, 1)  # S×C×H×W, a view: batches are copied one at a time
    return segment_batches([padded_forward(m) for m in models], stack, device, batch_size, dtype, allowed=allowed,
                           labels=labels, flips=flips)
