"""Ensembles larger than the GPU: each member on the device only for its own forward.

``predict --checkpoint A --checkpoint B ...`` averages several models. When their weights fit
on the device together (the usual case) they all move there once. When they do not (five
fold models of a large network on a small GPU, or a GPU shared with other jobs), each model
stays in host memory and :class:`OneAtATime` moves it onto the device for its forward and back
afterwards, so device memory holds one model's weights plus one batch's activations. The cost
is one host↔device copy of the weights per forward call (about weights / 10 GB/s: 10 ms for a
100 MB ResNet-50), which larger ``--batch-size`` values amortise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medchallenge.core import console

FIT_FRACTION = 0.5  # of free device memory the weights may take: activations need the rest


def weight_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def free_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device in bytes; None for other devices (host memory is not managed here)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


class OneAtATime(nn.Module):
    """``model`` kept on the host and moved to ``device`` only while its forward runs.

    Attribute look-ups fall through to the wrapped model (``receptive_field``, ``encoding``, …),
    so code written for the bare model works on the wrapper.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = model.cpu()
        self.target = device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.inner.to(self.target)
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.inner.cpu()  # frees the device copy before the next member moves in

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


def place_models(models: Sequence[nn.Module], device: torch.device | str,
                 budget: int | None = None) -> list[nn.Module]:
    """The models on ``device`` together when their weights fit in ``budget`` bytes (default: half of
    the device's free memory; unlimited off CUDA), else each wrapped in :class:`OneAtATime`.

    On CUDA the weights also take the channels_last format, which convolutions run fastest in under
    bf16 autocast; on the CPU they stay contiguous (channels_last is slower there for small batches).
    """
    device = torch.device(device)
    if budget is None:
        free = free_bytes(device)
        budget = None if free is None else int(free * FIT_FRACTION)
    if device.type == "cuda":  # NHWC convolutions (tensor cores under bf16 autocast); the math is unchanged
        models = [m.to(memory_format=torch.channels_last) for m in models]
    total = sum(weight_bytes(m) for m in models)
    if budget is None or len(models) == 1 or total <= budget:
        return [m.to(device) for m in models]
    console.log(f"{len(models)} models ({total / 2**20:.0f} MiB of weights) do not fit together on {device}"
                f" ({budget / 2**20:.0f} MiB available for weights): each moves onto it for its own forward")
    return [OneAtATime(m, device).eval() for m in models]
