"""The PANDA classifier: a backbone over a slide's tiles laid out as one image.

Input: a batch of tile stacks, B×N×C×T×T uint8 (C = 3 RGB, or 4 with a mask channel), straight
from the tile cache. On the device the tiles are inverted and scaled (``1 - x/255``, so white
background and white padding tiles are 0, as in the public 36×256 baseline) and laid out:

- ``mosaic`` (default): a ⌈√N⌉×⌈√N⌉ grid, B×C×(g·T)×(g·T) — 6×6 for 36 tiles;
- ``strip``: the report's concatenation along the height, B×C×(N·T)×T (9216×256);
- ``tiles``: B·N×C×T×T, each tile on its own (the ``tile-vote`` encoding).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from medchallenge.core.backbones import create_classifier, enable_gradient_checkpointing
from medchallenge.core.errors import OptionError
from medchallenge.core.registry import Registry
from medchallenge.panda import encoding as enc
from medchallenge.panda.unet import PandaUNet

MODELS = Registry("panda")
"""``classifier`` (:class:`PandaClassifier`) and ``unet`` (:class:`PandaUNet`)."""

LAYOUTS = ("mosaic", "strip")


def normalise_tiles(tiles: torch.Tensor, mask_scale: float | None = None) -> torch.Tensor:
    """B×N×C×T×T uint8 → float in [0, 1] with RGB inverted (white → 0).

    A 4th (mask) channel, when present, is multiplied by ``mask_scale`` / 255 instead.
    """
    x = tiles.float() / 255.0
    rgb = 1.0 - x[:, :, :3]
    if tiles.shape[2] == 3:
        return rgb
    mask = tiles[:, :, 3:].float() * ((mask_scale or 1.0) / 255.0)
    return torch.cat([rgb, mask], dim=2)


def mosaic(x: torch.Tensor) -> torch.Tensor:
    """B×N×C×T×T → B×C×(g·T)×(g·T) with g = ⌈√N⌉, tiles row-major by rank, zero-filled."""
    b, n, c, t, _ = x.shape
    g = math.ceil(math.sqrt(n))
    if g * g != n:
        x = torch.cat([x, x.new_zeros(b, g * g - n, c, t, t)], dim=1)
    x = x.reshape(b, g, g, c, t, t).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, g * t, g * t)


def strip(x: torch.Tensor) -> torch.Tensor:
    """B×N×C×T×T → B×C×(N·T)×T: tiles stacked along the height."""
    b, n, c, t, _ = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b, c, n * t, t)


class PandaClassifier(nn.Module):
    """A backbone from ``core.backbones`` over the laid-out tiles; outputs per ``encoding``.

    ``in_channels=4`` is the mask-guided classifier (the report's "EfficientUnet"): the first
    convolution keeps its pretrained RGB filters and gains a mask filter initialised to their
    mean. ``grad_checkpoint`` recomputes block activations in the backward pass (less memory).
    """

    def __init__(
        self,
        arch: str = "efficientnet-b0",
        encoding: str = "ordinal",
        layout: str = "mosaic",
        in_channels: int = 3,
        pretrained: bool = False,
        weights: str | Path | None = None,
        mask_scale: float | None = None,
        grad_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        enc.check_encoding(encoding)
        if layout not in LAYOUTS:
            raise OptionError(f"--layout {layout}: expected one of {', '.join(LAYOUTS)}")
        self.encoding = encoding
        self.layout = layout
        self.in_channels = in_channels
        self.mask_scale = mask_scale
        self.backbone = create_classifier(
            arch, enc.n_outputs(encoding), in_channels=in_channels, pretrained=pretrained, weights=weights
        )
        if grad_checkpoint:
            enable_gradient_checkpointing(self.backbone, arch)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """B×N×C×T×T uint8 tiles → logits B×K (B×N×6 for ``tile-vote``)."""
        x = normalise_tiles(tiles, self.mask_scale)
        b, n = x.shape[:2]
        if self.encoding == "tile-vote":
            flat = x.reshape(b * n, *x.shape[2:])
            return self.backbone(self._memory_format(flat)).reshape(b, n, -1)
        image = mosaic(x) if self.layout == "mosaic" else strip(x)
        return self.backbone(self._memory_format(image))

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        weight = next(self.backbone.parameters())
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return x.contiguous(memory_format=torch.channels_last)
        return x


@MODELS.register("classifier")
def build_classifier(arch: str = "efficientnet-b0", encoding: str = "ordinal", layout: str = "mosaic",
                     in_channels: int = 3, mask_scale: float | None = None,
                     grad_checkpoint: bool = False) -> PandaClassifier:
    """The classifier a spec describes, with random weights (pretrained ones: :func:`load_pretrained`)."""
    return PandaClassifier(arch, encoding, layout, in_channels=in_channels, mask_scale=mask_scale,
                           grad_checkpoint=grad_checkpoint)


MODELS.register("unet")(PandaUNet)


def load_pretrained(model: PandaClassifier, arch: str, weights: str | Path | None = None) -> None:
    """Put ImageNet weights (hub cache or ``weights``) into ``model``'s backbone; its head stays random.

    A pretrained twin is built by :func:`create_classifier` (which finds the file, or fails naming it
    and ``--no-pretrained``) and copied over: the first-conv adaptation for a mask channel and the
    head replacement are the same in both, and gradient checkpointing keeps parameter names.
    """
    twin = create_classifier(arch, enc.n_outputs(model.encoding), in_channels=model.in_channels,
                             pretrained=True, weights=weights)
    model.backbone.load_state_dict(twin.state_dict())

