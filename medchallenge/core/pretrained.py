"""Pretrained weights without network: the torch hub cache or ``--weights FILE``.

Weights are looked up as ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``). When
pretrained weights are asked for and absent, the error names the expected file, ``--weights`` and
``--no-pretrained``. There is never a download and never a silent fall-back to random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medchallenge.core.errors import DataError


def hub_checkpoint_dir() -> Path:
    """The folder torch hub caches weights in (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(file_name: str, weights: str | Path | None, pretrained: bool, what: str) -> Path | None:
    """Where the pretrained weights are, or None when none are wanted.

    Args:
        file_name: the file name torch hub caches the weights under (e.g. ``resnet18-f37072fd.pth``).
        weights: an explicit file (``--weights``), which wins.
        pretrained: whether pretrained weights are wanted at all.
        what: the model, for the message.

    Raises:
        DataError: the weights are wanted and not on disk.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise DataError(path, "--weights file not found")
        return path
    if not pretrained:
        return None
    path = hub_checkpoint_dir() / file_name
    if not path.is_file():
        raise DataError(
            path,
            f"pretrained weights for {what} not found (no download at run time): put the file there,"
            " pass --weights FILE, or train from scratch with --no-pretrained",
        )
    return path


def load_weights_file(path: Path) -> dict[str, Any]:
    """Load a state dict (or a checkpoint holding one) safely."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to unpickle is a bad file, named to the user
        raise DataError(path, f"cannot read weights ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise DataError(path, "not a state dict")
    return obj
