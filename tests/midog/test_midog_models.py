"""The detector ``train`` builds: a from-scratch ResNet18 body is normalised (GroupNorm), older
checkpoints' specs still build the frozen-BatchNorm body they were trained with."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from medchallenge.core.errors import OptionError
from medchallenge.midog.models import MODELS, build_detector
from medchallenge.midog.train import MidogOptions, MidogTrainer


def _spec(model: str) -> dict:
    fake = SimpleNamespace(options=MidogOptions(data=Path("."), model=model, patch_size=64), _num_classes=lambda: 2)
    return MidogTrainer.model_spec(fake)  # type: ignore[arg-type]


def _norms(model: nn.Module) -> set[type]:
    return {type(m) for m in model.backbone.body.modules() if isinstance(m, (nn.GroupNorm, FrozenBatchNorm2d,
                                                                              nn.BatchNorm2d))}


def test_train_builds_resnet18_with_group_norm_that_learns() -> None:
    spec = _spec("resnet18")
    assert spec["kwargs"]["norm"] == "group"
    model = MODELS.build(spec)
    # FrozenBatchNorm2d without pretrained statistics is the identity: no normalisation at all
    assert _norms(model) == {nn.GroupNorm}
    model.train()
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
                   [{"boxes": torch.tensor([[7.0, 7.0, 57.0, 57.0]]), "labels": torch.tensor([1])},
                    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    (losses["classification"] + losses["bbox_regression"]).backward()
    gn = model.backbone.body.bn1
    assert gn.weight.requires_grad and gn.weight.grad is not None and gn.weight.grad.abs().sum() > 0


def test_resnet50_spec_unchanged_and_old_specs_build_frozen_bodies() -> None:
    assert "norm" not in _spec("resnet50")["kwargs"]
    old = build_detector("resnet18", num_classes=2, patch_size=64)  # a spec written before `norm` existed
    assert _norms(old) == {FrozenBatchNorm2d}
    assert "backbone.body.bn1.running_mean" in old.state_dict()


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(OptionError, match="norm batch"):
        build_detector("resnet18", patch_size=64, norm="batch")
