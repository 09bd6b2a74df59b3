"""The KiTS models: the shared 2D U-Net (medchallenge.core.unet) on one CT channel, three classes.

``MODELS`` is the KiTS registry: checkpoints store ``{"name": "unet", "kwargs": {...}}`` and
``core.checkpoint.load_model`` rebuilds the network from that spec through it.
"""

from __future__ import annotations

from typing import Any

from medchallenge.core.registry import Registry
from medchallenge.core.unet import UNet2d

MODELS = Registry("kits")
NUM_CLASSES = 3  # background, kidney, tumour


@MODELS.register("unet")
def unet(in_channels: int = 1, num_classes: int = NUM_CLASSES, depth: int = 4, width: int = 32,
         batch_norm: bool = False, dropout: float = 0.0) -> UNet2d:
    """N×1×H×W normalised CT → N×3×H×W logits (H, W multiples of 2**depth: see ``predict.padded``)."""
    return UNet2d(in_channels=in_channels, num_classes=num_classes, depth=depth, width=width,
                  batch_norm=batch_norm, dropout=dropout)


def unet_spec(depth: int = 4, width: int = 32, batch_norm: bool = False, dropout: float = 0.0) -> dict[str, Any]:
    """The model spec of a 1-channel, 3-class U-Net (as saved in checkpoints)."""
    return {"name": "unet", "kwargs": {"in_channels": 1, "num_classes": NUM_CLASSES, "depth": depth, "width": width,
                                       "batch_norm": batch_norm, "dropout": dropout}}
