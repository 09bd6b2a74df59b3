"""Havaei et al. 2017 ("Brain Tumor Segmentation with Deep Neural Networks"), exact sizes.

All convolutions are valid and all pooling has stride 1, so a network trained on patches
segments a whole slice in one pass: the output layer is a convolution.

- :class:`MaxoutConv2d`: K linear pieces (a conv with K·out maps), element-wise max over pieces.
- :class:`TwoPathCNN` on C×33×33: local path maxout conv 7×7 → 64, max-pool 4×4, maxout conv
  3×3 → 64, max-pool 2×2 (→ 64×21×21); global path maxout conv 13×13 → 160 (→ 160×21×21);
  concatenated (224) → output conv 21×21 → classes (1×1). On C×H×W: classes×(H−32)×(W−32).
- :class:`InputCascadeCNN`: a TwoPathCNN on C×65×65 gives classes×33×33, concatenated with the
  centre C×33×33 of the input (C + classes channels) for a second TwoPathCNN → 1×1.
  On C×H×W: classes×(H−64)×(W−64).
"""

from __future__ import annotations

import torch
from torch import nn

from medchallenge.core.registry import Registry


class MaxoutConv2d(nn.Module):
    """Conv2d to ``out_channels × pieces`` maps, then the max over the pieces."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pieces: int = 2) -> None:
        super().__init__()
        self.pieces = pieces
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels * pieces, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        n, _, h, w = y.shape
        return y.view(n, self.pieces, self.out_channels, h, w).max(dim=1).values


class TwoPathCNN(nn.Module):
    """Local (7×7, 3×3) and global (13×13) paths, a 21×21 convolutional output layer. Receptive field 33."""

    receptive_field = 33

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.local_path = nn.Sequential(
            MaxoutConv2d(in_channels, 64, 7, pieces), nn.MaxPool2d(4, stride=1),
            MaxoutConv2d(64, 64, 3, pieces), nn.MaxPool2d(2, stride=1),
        )
        self.global_path = nn.Sequential(MaxoutConv2d(in_channels, 160, 13, pieces))
        self.dropout = nn.Dropout2d(dropout)
        self.output_layer = nn.Conv2d(224, num_classes, 21)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W → N×classes×(H−32)×(W−32) logits."""
        features = torch.cat([self.local_path(x), self.global_path(x)], dim=1)
        return self.output_layer(self.dropout(features))


class InputCascadeCNN(nn.Module):
    """Two TwoPathCNNs: the first's class maps feed the second as extra input channels. Receptive field 65."""

    receptive_field = 65

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.first = TwoPathCNN(in_channels, num_classes, pieces, dropout)
        self.second = TwoPathCNN(in_channels + num_classes, num_classes, pieces, dropout)

    @property
    def output_layer(self) -> nn.Conv2d:
        return self.second.output_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W → N×classes×(H−64)×(W−64) logits."""
        maps = self.first(x)  # H−32
        centre = x[:, :, 16:-16, 16:-16]
        return self.second(torch.cat([centre, maps], dim=1))


ARCHITECTURES: dict[str, type[nn.Module]] = {"twopath": TwoPathCNN, "inputcascade": InputCascadeCNN}


def registry(challenge: str) -> Registry:
    """A registry of both architectures for ``challenge`` (brats and lits each own one; a LiTS
    transfer reads a BraTS checkpoint through a "brats" registry of the same builders)."""
    models = Registry(challenge)
    for name, cls in ARCHITECTURES.items():
        models.register(name)(cls)
    return models


def path_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters by part: ``local`` and ``global`` paths (both nets of a cascade) and the final ``output`` layer."""
    nets = [model.first, model.second] if isinstance(model, InputCascadeCNN) else [model]
    return {
        "local": [p for net in nets for p in net.local_path.parameters()],
        "global": [p for net in nets for p in net.global_path.parameters()],
        "output": list(model.output_layer.parameters()),
    }
