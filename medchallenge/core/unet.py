"""The shared 2D U-Net (Ronneberger et al. 2015) with padded convolutions.

Double 3×3 conv blocks (padding 1, optional batch norm), max-pool down, transposed-conv up,
skip connections by concatenation without cropping. Input H and W must be multiples of
``2**depth``: :func:`pad_to_multiple` pads and returns the crop that undoes it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DoubleConv(nn.Sequential):
    """(conv 3×3 → [BN] → ReLU) × 2, keeping H×W."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool = True, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(((c_in, c_out), (c_out, c_out))):
            layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0 and i == 1:
                layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet2d(nn.Module):
    """U-Net: N×in_channels×H×W → N×num_classes×H×W logits (H, W multiples of 2**depth).

    ``depth`` is the number of poolings; channel widths are ``width · 2**level``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, depth: int = 4, width: int = 32,
                 batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0], batch_norm)])
        for i in range(1, depth + 1):
            self.down.append(DoubleConv(widths[i - 1], widths[i], batch_norm, dropout if i == depth else 0.0))
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2))
            self.up_conv.append(DoubleConv(widths[i - 1] * 2, widths[i - 1], batch_norm))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, conv in zip(self.up, self.up_conv):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = 0.0) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Pad N×C×H×W on the bottom/right to multiples of ``multiple``; returns (padded, (rows, cols) crop)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=value)
    return x, (slice(0, h), slice(0, w))
