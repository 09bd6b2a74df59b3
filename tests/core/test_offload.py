"""core.offload: ensemble members that do not fit on the device together run one at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medchallenge.core.offload import OneAtATime, place_models, weight_bytes


class Tagged(nn.Module):
    """A conv with an extra attribute, like Havaei's receptive_field."""

    receptive_field = 33

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def test_weight_bytes_counts_parameters_and_buffers() -> None:
    model = Tagged()
    conv = (2 * 3 * 9 + 3) * 4
    bn = (3 + 3) * 4 + (3 + 3) * 4 + 8  # weight, bias; running mean, var; num_batches_tracked (int64)
    assert weight_bytes(model) == conv + bn


def test_models_that_fit_move_together_and_others_are_wrapped() -> None:
    torch.manual_seed(0)
    models = [Tagged().eval(), Tagged().eval()]
    size = weight_bytes(models[0])
    together = place_models(models, "cpu", budget=2 * size)
    assert all(type(m) is Tagged for m in together)
    apart = place_models(models, "cpu", budget=2 * size - 1)
    assert all(isinstance(m, OneAtATime) for m in apart)
    assert place_models(models[:1], "cpu", budget=0)[0] is models[0]  # one model is never wrapped
    x = torch.randn(2, 2, 5, 5)
    for bare, wrapped in zip(models, apart):
        torch.testing.assert_close(wrapped(x), bare(x), rtol=0, atol=0)
        assert wrapped.receptive_field == 33 and not wrapped.training  # attributes fall through; eval kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_at_a_time_holds_one_model_on_the_gpu() -> None:
    device = torch.device("cuda")
    models = [nn.Linear(1024, 1024).eval() for _ in range(3)]  # 4 MiB of weights each
    placed = place_models(models, device, budget=weight_bytes(models[0]))
    base = torch.cuda.memory_allocated(device)
    x = torch.randn(8, 1024, device=device)
    peak = 0
    for model in placed:
        torch.cuda.reset_peak_memory_stats(device)
        y = model(x)
        peak = max(peak, torch.cuda.max_memory_allocated(device) - base)
        assert y.device.type == "cuda" and next(model.inner.parameters()).device.type == "cpu"
        torch.testing.assert_close(y.cpu(), model.inner(x.cpu()), rtol=1e-4, atol=1e-4)
    assert peak < 2 * weight_bytes(models[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_models_on_cuda_take_channels_last_and_keep_their_outputs() -> None:
    torch.manual_seed(0)
    model = Tagged().eval()
    x = torch.randn(4, 2, 16, 16)
    expected = model(x)
    (placed,) = place_models([model], "cuda")
    assert placed.conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(placed(x.cuda()).cpu(), expected, rtol=1e-3, atol=1e-3)
