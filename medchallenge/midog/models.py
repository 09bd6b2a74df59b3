"""RetinaNet for ~50 px mitotic figures, at 1:1 patch scale.

The default is torchvision's ``retinanet_resnet50_fpn_v2``. COCO weights, when wanted, are read
from the torch hub cache (or ``--weights``) into the 91-class model first; the anchor generator
and both heads are then replaced for our classes and box size (torchvision refuses
``num_classes != 91`` together with weights). Anchors: square, sizes 16–406 px over the five
FPN levels (three scales per level), so 50 px boxes fall on P3/P4 anchors. ``min_size =
max_size = patch size`` keeps patches at 1:1 (torchvision would upscale a 512 patch to 800).
``backbone="resnet18"`` builds the same detector on a ResNet18-FPN (for CPU tests and demos).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from medchallenge.core.errors import OptionError
from medchallenge.core.pretrained import load_weights_file, resolve_weights

BACKBONES = ("resnet50", "resnet18")
ANCHOR_SIZES = ((16, 20, 25), (32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406))


def build_detector(backbone: str = "resnet50", num_classes: int = 2, patch_size: int = 512, pretrained: bool = False,
                   weights: str | Path | None = None, trainable_layers: int = 5) -> nn.Module:
    """RetinaNet with ``num_classes`` (incl. background index 0) for ``patch_size`` patches."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    if backbone not in BACKBONES:
        raise OptionError(f"--backbone {backbone}: expected one of {', '.join(BACKBONES)}")
    if backbone == "resnet50":
        from torchvision.models.detection import RetinaNet_ResNet50_FPN_V2_Weights, retinanet_resnet50_fpn_v2

        file_name = Path(RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1.url).name
        path = resolve_weights(file_name, weights, pretrained, "retinanet_resnet50_fpn_v2 (COCO)")
        coco = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91,
                                         trainable_backbone_layers=trainable_layers)
        if path is not None:
            coco.load_state_dict(load_weights_file(path))
        body = coco.backbone
    else:
        if pretrained or weights is not None:
            raise OptionError("--backbone resnet18 has no COCO detector weights: use --no-pretrained")
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        body = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=trainable_layers,
                                   returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    anchors = AnchorGenerator(sizes=ANCHOR_SIZES, aspect_ratios=((1.0,),) * len(ANCHOR_SIZES))
    head = RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return RetinaNet(body, num_classes, min_size=patch_size, max_size=patch_size, anchor_generator=anchors, head=head,
                     score_thresh=0.05, nms_thresh=0.3, detections_per_img=100)


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Rebuild from a checkpoint's ``model`` entry (no pretrained weights read)."""
    return build_detector(**{**spec["kwargs"], "pretrained": False, "weights": None})
