"""The KiTS models: the shared 2D U-Net (medchallenge.core.unet) on one CT channel, three classes.

Checkpoints store ``{"name": "unet", "kwargs": {...}}``; :func:`build_model` rebuilds the network
from that spec for prediction.
"""

from __future__ import annotations

from typing import Any

from medchallenge.core.errors import OptionError
from medchallenge.core.unet import UNet2d

MODELS = ("unet",)
NUM_CLASSES = 3  # background, kidney, tumour


def unet_spec(depth: int = 4, width: int = 32, batch_norm: bool = False, dropout: float = 0.0) -> dict[str, Any]:
    """The model spec of a 1-channel, 3-class U-Net (as saved in checkpoints)."""
    return {"name": "unet", "kwargs": {"in_channels": 1, "num_classes": NUM_CLASSES, "depth": depth, "width": width,
                                       "batch_norm": batch_norm, "dropout": dropout}}


def build_model(spec: dict[str, Any]) -> UNet2d:
    """The network a model spec describes: N×1×H×W normalised CT → N×3×H×W logits."""
    if spec.get("name") not in MODELS:
        raise OptionError(f"unknown KiTS model {spec.get('name')!r} (expected one of {', '.join(MODELS)})")
    return UNet2d(**spec["kwargs"])
