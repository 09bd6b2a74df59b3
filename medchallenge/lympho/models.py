"""Multi-instance models: one patient = a bag of images + clinical attributes → P(malignant).

All image models take a flat batch of images from several patients (N×3×C×C uint8, owners
unknown to the CNN) with ``bags`` (N,) giving each image's patient index in 0..B-1, and pool per
patient afterwards (the report's design). ``clinical`` is B×F normalised clinical features.
Every model returns a dict with ``logit`` (B,) — the log-odds of its final probability — and,
where it applies, per-branch logits (``image_logit``, ``clinical_logit``), ``gate`` (B×2) and
``attention`` (N,).

- ``mean``: ResNet18 features (512-d) mean-pooled per patient → linear.
- ``attention``: gated attention pooling (Ilse et al. 2018) instead of the mean.
- ``clinical``: an MLP on the clinical features alone.
- ``sum-of-losses``: image (mean) and clinical branches trained on the sum of their BCE losses;
  the prediction averages their probabilities.
- ``moe``: a gate on [patient embedding, clinical features] weights the two experts' probabilities
  (Sahasrabudhe et al. 2021's mixture of experts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medchallenge.core.backbones import create_classifier
from medchallenge.core.errors import OptionError
from medchallenge.core.registry import Registry

KINDS = ("mean", "attention", "clinical", "sum-of-losses", "moe")
MODELS = Registry("lympho")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def segment_mean(features: torch.Tensor, bags: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Mean of ``features`` (N×D) per bag → B×D; invariant to order and bag size."""
    sums = features.new_zeros(n_bags, features.shape[1]).index_add_(0, bags, features)
    counts = torch.bincount(bags, minlength=n_bags).clamp(min=1).to(features.dtype)
    return sums / counts[:, None]


def segment_softmax(scores: torch.Tensor, bags: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Softmax of ``scores`` (N,) within each bag: weights summing to 1 per bag."""
    top = scores.new_full((n_bags,), float("-inf")).scatter_reduce(0, bags, scores, reduce="amax")
    exp = torch.exp(scores - top[bags])
    total = exp.new_zeros(n_bags).index_add_(0, bags, exp)
    return exp / total[bags]


class ImageEncoder(nn.Module):
    """ImageNet-normalised ResNet18 without head, run in chunks of ``chunk`` images."""

    def __init__(self, arch: str, pretrained: bool, weights: str | Path | None, chunk: int) -> None:
        super().__init__()
        self.cnn = create_classifier(arch, num_classes=0, pretrained=pretrained, weights=weights)
        self.dim = int(self.cnn.num_features)
        self.chunk = chunk
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×C×C uint8 → N×dim features."""
        out = []
        for start in range(0, images.shape[0], self.chunk):
            x = (images[start : start + self.chunk].float() / 255.0 - self.mean) / self.std
            out.append(self.cnn(x))
        return torch.cat(out)


class GatedAttention(nn.Module):
    """a_i = softmax_bag(wᵀ(tanh(V h_i) ⊙ σ(U h_i))); pooled = Σ a_i h_i (Ilse et al. 2018)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.v = nn.Linear(dim, hidden)
        self.u = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor, bags: torch.Tensor, n_bags: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(1)
        weights = segment_softmax(scores.float(), bags, n_bags).to(h.dtype)
        pooled = h.new_zeros(n_bags, h.shape[1]).index_add_(0, bags, h * weights[:, None])
        return pooled, weights


def clinical_mlp(n_features: int) -> nn.Sequential:
    """The report's clinical MLP: n → 150 → 200 → 1 with ReLUs."""
    return nn.Sequential(nn.Linear(n_features, 150), nn.ReLU(), nn.Linear(150, 200), nn.ReLU(), nn.Linear(200, 1))


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


class LymphoModel(nn.Module):
    """One of :data:`KINDS` (see the module docstring)."""

    def __init__(self, model: str = "mean", n_clinical: int = 2, arch: str = "resnet18", pretrained: bool = False,
                 weights: str | Path | None = None, chunk: int = 64) -> None:
        super().__init__()
        if model not in KINDS:
            raise OptionError(f"--model {model}: expected one of {', '.join(KINDS)}")
        self.kind = model
        self.encoder = ImageEncoder(arch, pretrained, weights, chunk) if model != "clinical" else None
        dim = self.encoder.dim if self.encoder is not None else 0
        self.attention = GatedAttention(dim) if model == "attention" else None
        self.image_head = nn.Linear(dim, 1) if self.encoder is not None else None
        self.clinical = clinical_mlp(n_clinical) if model in ("clinical", "sum-of-losses", "moe") else None
        self.gate = nn.Linear(dim + n_clinical, 2) if model == "moe" else None

    def forward(self, images: torch.Tensor, bags: torch.Tensor, clinical: torch.Tensor) -> dict[str, torch.Tensor]:
        n_bags = clinical.shape[0]
        out: dict[str, torch.Tensor] = {}
        embedding = None
        if self.encoder is not None:
            features = self.encoder(images)
            if self.attention is not None:
                embedding, out["attention"] = self.attention(features, bags, n_bags)
            else:
                embedding = segment_mean(features, bags, n_bags)
            out["image_logit"] = self.image_head(embedding).squeeze(1).float()
        if self.clinical is not None:
            out["clinical_logit"] = self.clinical(clinical).squeeze(1).float()
        if self.kind in ("mean", "attention"):
            out["logit"] = out["image_logit"]
        elif self.kind == "clinical":
            out["logit"] = out["clinical_logit"]
        elif self.kind == "sum-of-losses":
            p = (torch.sigmoid(out["image_logit"]) + torch.sigmoid(out["clinical_logit"])) / 2
            out["logit"] = _logit(p)
        else:
            assert self.gate is not None and embedding is not None
            gate = torch.softmax(self.gate(torch.cat([embedding, clinical.to(embedding.dtype)], 1)).float(), dim=1)
            experts = torch.stack([torch.sigmoid(out["image_logit"]), torch.sigmoid(out["clinical_logit"])], 1)
            out["gate"] = gate
            out["logit"] = _logit((gate * experts).sum(1))
        return out


def _register(kind: str) -> None:
    """Register ``kind``: the spec's name is the kind, its kwargs size the model.

    Built without pretrained weights: the trainer loads them in ``prepare_model`` and a checkpoint
    carries its own, so predict never needs the ImageNet file. A ``model`` kwarg (checkpoints
    written before the registry) is the name again and is dropped.
    """

    @MODELS.register(kind)
    def build(n_clinical: int = 2, arch: str = "resnet18", chunk: int = 64, **old: Any) -> LymphoModel:
        old.pop("model", None)
        if old:
            raise TypeError(f"unexpected spec arguments {sorted(old)}")
        return LymphoModel(kind, n_clinical, arch, pretrained=False, weights=None, chunk=chunk)


for _kind in KINDS:
    _register(_kind)


def load_pretrained_encoder(model: LymphoModel, arch: str, weights: str | Path | None) -> None:
    """ImageNet weights (hub cache or ``weights``) into the image encoder; a clinical model has none."""
    if model.encoder is None:
        return
    source = create_classifier(arch, num_classes=0, pretrained=True, weights=weights)
    model.encoder.cnn.load_state_dict(source.state_dict())
