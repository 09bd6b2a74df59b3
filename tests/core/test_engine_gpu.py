"""GPU paths of the engine: bf16 autocast, fp16 with GradScaler, channels_last, compile (CUDA only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medchallenge.core import engine as engine_module
from medchallenge.core.engine import TrainConfig, Trainer

pytestmark = pytest.mark.gpu


class ConvTrainer(Trainer):
    challenge = "toy"
    monitor = "accuracy"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))

    def model_spec(self) -> dict:
        return {"name": "conv", "kwargs": {}}

    def _data(self, seed: int) -> TensorDataset:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (64,), generator=g)
        x = torch.randn(64, 3, 16, 16, generator=g) + y[:, None, None, None] * 1.5
        return TensorDataset(x, y)

    def train_dataset(self):
        return self._data(0)

    def training_step(self, model, batch):
        x, y = batch
        if self.config.channels_last:
            assert x.is_contiguous(memory_format=torch.channels_last)
        logits = model(x)
        if self.amp_dtype is not None:
            assert logits.dtype == self.amp_dtype
        return nn.functional.cross_entropy(logits.float(), y)

    def validate(self, model):
        x, y = self._data(1).tensors
        with self.autocast():
            pred = model(x.to(self.device)).argmax(1).cpu()
        return {"accuracy": float((pred == y).float().mean())}


def _fit(tmp_path: Path, **kw) -> dict:
    cfg = TrainConfig(out=tmp_path / "run", epochs=3, batch_size=16, lr=1e-2, device="cuda", **kw)
    return ConvTrainer(cfg).fit()


def test_bf16_channels_last(tmp_path: Path) -> None:
    result = _fit(tmp_path, channels_last=True)
    assert result["best"]["accuracy"] > 0.8
    assert result["last"]["peak_gpu_mem_gb"] > 0


def test_fp16_uses_grad_scaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "amp_dtype", lambda device, enabled=True: torch.float16)
    result = _fit(tmp_path)
    assert result["best"]["accuracy"] > 0.8
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["train_state"]["scaler"] is not None


def test_compile(tmp_path: Path) -> None:
    result = _fit(tmp_path, compile=True)
    assert result["best"]["accuracy"] > 0.8
