"""The PANDA tile U-Net (registered as ``unet`` in :data:`medchallenge.panda.models.MODELS`)."""

from __future__ import annotations

import torch
from torch import nn

from medchallenge.core.unet import UNet2d, pad_to_multiple


class PandaUNet(nn.Module):
    """The tile U-Net: tiles B×3×T×T (uint8, or float with the same 0–255 values) → logits B×K×T×T.

    The report's U-Net: the course's network without its 4th down/up block (``depth=3``).
    Tiles are inverted and scaled like the classifier's (``1 - x/255``, white → 0) and padded to
    a multiple of ``2**depth`` when needed.
    """

    def __init__(self, num_classes: int, depth: int = 3, width: int = 32) -> None:
        super().__init__()
        self.depth = depth
        self.unet = UNet2d(3, num_classes, depth=depth, width=width)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        x = 1.0 - tiles.float() / 255.0
        x, (rows, cols) = pad_to_multiple(x, 2**self.depth)
        return self.unet(x)[..., rows, cols]
