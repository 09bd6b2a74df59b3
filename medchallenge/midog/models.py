"""RetinaNet for ~50 px mitotic figures, at 1:1 patch scale.

The default is torchvision's ``retinanet_resnet50_fpn_v2``. The registry builds the bare detector
from its spec (no weights read); COCO weights, when wanted, are loaded by :func:`load_coco_backbone`
(the trainer's ``prepare_model``) into the backbone: the anchor generator and both heads are ours,
for our classes and box size (torchvision refuses ``num_classes != 91`` together with weights).
Anchors: square, sizes 16–406 px over the five FPN levels (three scales per level), so 50 px boxes
fall on P3/P4 anchors. ``min_size = max_size = patch size`` keeps patches at 1:1 (torchvision would
upscale a 512 patch to 800). ``backbone="resnet18"`` builds the same detector on a ResNet18-FPN
(for CPU tests and demos).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from torch import nn

from medchallenge.core.errors import OptionError
from medchallenge.core.pretrained import load_weights_file, resolve_weights
from medchallenge.core.registry import Registry

MODELS = Registry("midog")
BACKBONES = ("resnet50", "resnet18")
ANCHOR_SIZES = ((16, 20, 25), (32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406))
# torchvision's order: the last ``trainable_layers`` of these stay trainable
RESNET_LAYERS = ("layer4", "layer3", "layer2", "layer1", "conv1")
NORMS = ("frozen", "group")


def _backbone(backbone: str, trainable_layers: int, norm: str = "frozen") -> nn.Module:
    """The ResNet-FPN body with P6/P7, as ``retinanet_resnet50_fpn_v2`` (or on a ResNet18) builds it.

    ``norm`` (ResNet18 only): ``"frozen"`` is torchvision's FrozenBatchNorm2d, which without
    pretrained statistics is the identity — a ResNet with no normalisation at all, which from
    scratch barely learned in the demo's 40 steps (held-out F1 0.1); ``"group"`` is GroupNorm
    (16 groups), trainable and independent of the (tiny) batch size.
    """
    if backbone not in BACKBONES:
        raise OptionError(f"--model {backbone}: expected one of {', '.join(BACKBONES)}")
    if backbone == "resnet50":
        from torchvision.models.detection import retinanet_resnet50_fpn_v2

        return retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).backbone
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    if norm not in NORMS:
        raise OptionError(f"norm {norm}: expected one of {', '.join(NORMS)}")
    layer = partial(_group_norm, 16) if norm == "group" else FrozenBatchNorm2d
    return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=trainable_layers,
                               returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256), norm_layer=layer)


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels)


@MODELS.register("retinanet")
def build_detector(backbone: str = "resnet50", num_classes: int = 2, patch_size: int = 512,
                   trainable_layers: int = 5, norm: str = "frozen") -> nn.Module:
    """RetinaNet with ``num_classes`` (incl. background index 0) for ``patch_size`` patches, random weights.

    ``norm`` is the ResNet18 body's normalisation (see :func:`_backbone`); the default keeps the
    checkpoints written before it existed loadable; ``train`` writes ``"group"`` for resnet18.
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    body = _backbone(backbone, trainable_layers, norm)
    anchors = AnchorGenerator(sizes=ANCHOR_SIZES, aspect_ratios=((1.0,),) * len(ANCHOR_SIZES))
    head = RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return RetinaNet(body, num_classes, min_size=patch_size, max_size=patch_size, anchor_generator=anchors, head=head,
                     score_thresh=0.05, nms_thresh=0.3, detections_per_img=100)


def load_coco_backbone(model: nn.Module, backbone: str, weights: str | Path | None) -> None:
    """Load the COCO RetinaNet's backbone (ResNet50-FPN) into ``model`` from the hub cache or ``weights``.

    Raises:
        OptionError: resnet18 (no COCO detector weights exist for it).
        DataError: the weights file is absent (naming it and --no-pretrained) or does not fit.
    """
    if backbone != "resnet50":
        raise OptionError(f"--model {backbone} has no COCO detector weights: use --no-pretrained")
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_V2_Weights

    file_name = Path(RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1.url).name
    path = resolve_weights(file_name, weights, True, "retinanet_resnet50_fpn_v2 (COCO)")
    state = load_weights_file(path)
    prefix = "backbone."
    model.backbone.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def freeze_backbone(model: nn.Module, trainable_layers: int) -> None:
    """Keep only the last ``trainable_layers`` ResNet stages trainable (torchvision's rule; 5: all).

    torchvision ignores ``trainable_backbone_layers`` when it builds without weights, so the
    ResNet50 body is frozen here, after the COCO weights are in.
    """
    trainable = list(RESNET_LAYERS[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, param in model.backbone.body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)
