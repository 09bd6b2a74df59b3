"""The shared U-Net's shapes and the Dice losses on hand-built tensors."""

from __future__ import annotations

import pytest
import torch

from medchallenge.core.losses import dice_ce_loss, soft_dice_loss
from medchallenge.core.unet import UNet2d, pad_to_multiple


@pytest.mark.parametrize(("depth", "bn"), [(2, True), (3, False)])
def test_unet_shapes(depth: int, bn: bool) -> None:
    net = UNet2d(in_channels=2, num_classes=3, depth=depth, width=4, batch_norm=bn)
    assert net(torch.zeros(2, 2, 32, 48)).shape == (2, 3, 32, 48)


def test_pad_to_multiple_round_trip() -> None:
    x = torch.rand(1, 1, 30, 45)
    padded, (rows, cols) = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (32, 48)
    torch.testing.assert_close(padded[..., rows, cols], x)


def test_soft_dice_known_values() -> None:
    target = torch.tensor([[[0, 1], [1, 1]]])
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    # predict foreground everywhere: class 1 Dice = 2·3/(4+3) = 6/7
    all_fg = torch.tensor([[-100.0, 100.0]]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert soft_dice_loss(all_fg, target).item() == pytest.approx(1 - 6 / 7, abs=1e-4)
    # with background counted: background Dice = (0 + eps)/(1 + eps) ≈ 0 → mean ≈ 3/7
    assert soft_dice_loss(all_fg, target, include_background=True).item() == pytest.approx(1 - 3 / 7, abs=1e-3)
    ignored = torch.tensor([[[0, 1], [1, -1]]])
    assert torch.isfinite(soft_dice_loss(all_fg, ignored, ignore_index=-1))
    assert dice_ce_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
