"""One factory for the image classifiers the challenges use (timm-style explicit knobs).

``create_classifier(arch, num_classes, in_channels, pretrained, weights)`` builds
efficientnet-pytorch's EfficientNets and torchvision's ResNet/ResNeXt/AlexNet/VGG, loads
pretrained weights from the local torch hub cache (or ``--weights FILE``) before replacing the
head, and adapts the first convolution to other channel counts while keeping the pretrained RGB
filters. ``num_classes=0`` gives a feature extractor (head = identity, ``model.num_features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.pretrained import load_weights_file, resolve_weights

TORCHVISION_ARCHS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "alexnet": "AlexNet_Weights",
    "vgg16": "VGG16_Weights",
}
EFFICIENTNET_ARCHS = tuple(f"efficientnet-b{i}" for i in range(8))
ARCHS = (*EFFICIENTNET_ARCHS, *TORCHVISION_ARCHS)


def weights_file_name(arch: str) -> str:
    """The file name the ImageNet weights of ``arch`` have in the torch hub cache."""
    if arch in EFFICIENTNET_ARCHS:
        from efficientnet_pytorch.utils import url_map

        return Path(url_map[arch]).name
    import torchvision.models as tvm

    enum = getattr(tvm, TORCHVISION_ARCHS[arch])
    return Path(enum.IMAGENET1K_V1.url).name


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise OptionError(f"--arch {arch}: expected one of {', '.join(ARCHS)}")


def create_classifier(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build ``arch`` with a fresh head of ``num_classes`` outputs (0: features only).

    Pretrained ImageNet weights are loaded into the 3-channel network first; then the head is
    replaced and, for ``in_channels != 3``, the first convolution is adapted
    (:func:`adapt_first_conv`). Inputs are N×in_channels×H×W floats.
    """
    check_arch(arch)
    path = resolve_weights(weights_file_name(arch), weights, pretrained, arch)
    if arch in EFFICIENTNET_ARCHS:
        from efficientnet_pytorch import EfficientNet

        model: nn.Module = EfficientNet.from_name(arch)
        head_attr = "_fc"
    else:
        import torchvision.models as tvm

        model = getattr(tvm, arch)(weights=None)
        head_attr = "fc" if hasattr(model, "fc") else "classifier"
    if path is not None:
        state = load_weights_file(path)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise DataError(path, f"these weights do not fit {arch} ({' '.join(str(err).split())[:160]})") from err
        if unexpected or any(not k.startswith(("fc.", "_fc.", "classifier.")) for k in missing):
            raise DataError(path, f"these weights do not fit {arch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    _replace_head(model, head_attr, num_classes)
    if in_channels != 3:
        adapt_first_conv(first_conv(model), in_channels)
    return model


def _replace_head(model: nn.Module, attr: str, num_classes: int) -> None:
    head = getattr(model, attr)
    if isinstance(head, nn.Sequential):  # AlexNet / VGG: the last Linear of the classifier
        last = head[-1]
        assert isinstance(last, nn.Linear)
        model.num_features = last.in_features  # type: ignore[assignment]
        head[-1] = nn.Linear(last.in_features, num_classes) if num_classes > 0 else nn.Identity()
        return
    assert isinstance(head, nn.Linear)
    model.num_features = head.in_features  # type: ignore[assignment]
    setattr(model, attr, nn.Linear(head.in_features, num_classes) if num_classes > 0 else nn.Identity())


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that sees the input image."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError("model has no Conv2d")


@torch.no_grad()
def adapt_first_conv(conv: nn.Conv2d, in_channels: int, init: str = "mean") -> None:
    """Give ``conv`` ``in_channels`` inputs, keeping its existing filters for the first ones.

    New channels are initialised with the mean of the existing filters (``init="mean"``) or zeros
    (``"zero"``), so with the new channels at zero the layer's response is unchanged.
    Weight shape goes from (out, c_old, k, k) to (out, in_channels, k, k).
    """
    old = conv.weight
    c_old = old.shape[1]
    new = torch.empty(old.shape[0], in_channels, *old.shape[2:], dtype=old.dtype, device=old.device)
    keep = min(c_old, in_channels)
    new[:, :keep] = old[:, :keep]
    if in_channels > c_old:
        fill = old.mean(dim=1, keepdim=True) if init == "mean" else torch.zeros_like(old[:, :1])
        new[:, c_old:] = fill.expand(-1, in_channels - c_old, *old.shape[2:])
    conv.weight = nn.Parameter(new)
    conv.in_channels = in_channels


def enable_gradient_checkpointing(model: nn.Module, arch: str) -> int:
    """Recompute each stage's activations in the backward pass instead of storing them.

    The units are EfficientNet's MBConv blocks and ResNet/ResNeXt's residual blocks: only their
    inputs are kept during the forward pass, trading about a third more compute for most of the
    activation memory. Active only in training mode with gradients on; parameter names (and so
    checkpoints) are unchanged. Returns the number of blocks wrapped.

    Raises:
        OptionError: an architecture without such blocks (AlexNet, VGG).
    """
    from torch.utils.checkpoint import checkpoint

    if arch in EFFICIENTNET_ARCHS:
        blocks = list(model._blocks)  # type: ignore[attr-defined]
    elif arch.startswith(("resnet", "resnext")):
        blocks = [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)]
    else:
        raise OptionError(f"--grad-checkpoint: supported for efficientnet-* and resnet/resnext, not {arch}")
    for block in blocks:
        forward = block.forward

        def run(*args: Any, _forward: Any = forward, _block: nn.Module = block, **kwargs: Any) -> Any:
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = run  # type: ignore[method-assign]
    return len(blocks)


def describe(arch: str) -> dict[str, Any]:
    """What the checkpoint records about a backbone."""
    return {"arch": arch, "weights_file": weights_file_name(arch)}
