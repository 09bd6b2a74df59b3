"""Segmentation losses shared by the challenges: soft Dice and Dice + cross-entropy."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    include_background: bool = False,
    ignore_index: int | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """1 − mean over classes of the batch soft Dice ``2Σpt / (Σp + Σt)``.

    Args:
        logits: N×C×H×W.
        target: N×H×W integer labels in 0..C-1 (``ignore_index`` pixels excluded).
        include_background: count class 0 in the mean.

    Classes absent from both prediction and target contribute a Dice of 1 (eps smoothing), so an
    empty class does not dominate the loss.
    """
    probs = torch.softmax(logits.float(), dim=1)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe.long(), probs.shape[1]).permute(0, 3, 1, 2).float()
    mask = valid.unsqueeze(1).float()
    probs, onehot = probs * mask, onehot * mask
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    if not include_background:
        dice = dice[1:]
    return 1.0 - dice.mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0,
                 ignore_index: int | None = None) -> torch.Tensor:
    """Cross-entropy + soft Dice (foreground classes), as in nnU-Net."""
    ce = F.cross_entropy(logits.float(), target.long(), ignore_index=-100 if ignore_index is None else ignore_index)
    return ce_weight * ce + soft_dice_loss(logits, target, ignore_index=ignore_index)
