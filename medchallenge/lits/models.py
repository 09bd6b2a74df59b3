"""The LiTS model registry (Havaei's TwoPathCNN / InputCascadeCNN on 1 CT channel, 3 classes) and the
transfer of BraTS weights into it.

Input mismatch (4 MRI channels → 1 CT channel): every convolution that sees the image gets, as
its single input filter, the SUM of its four pretrained modality filters — exactly the response
the BraTS network would give if the CT were fed in all four channels, so the pretrained features
start where they were. In an InputCascadeCNN the second net's class-map inputs are mapped from
BraTS classes (0 background, 2 edema, 4 enhancing) to LiTS (0 background, 1 liver, 2 tumour).
The output layer is re-created for 3 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from medchallenge.core.errors import DataError
from medchallenge.core.registry import Registry
from medchallenge.havaei.models import InputCascadeCNN, MaxoutConv2d, TwoPathCNN, registry

MODELS = Registry("lits")
MODELS.register("twopath")(TwoPathCNN)
MODELS.register("inputcascade")(InputCascadeCNN)
SOURCE_MODELS = registry("brats")
"""BraTS checkpoints (the source of ``--transfer``) are rebuilt through the same Havaei builders,
so lits never imports brats."""
N_CLASSES = 3
BRATS_CHANNELS, BRATS_CLASSES = 4, 5
BRATS_TO_LITS_CLASSES = [0, 2, 4]


@torch.no_grad()
def adapt_input_layer(conv: MaxoutConv2d, class_maps: int = 0, brats_classes: int = BRATS_CLASSES) -> None:
    """Replace the 4 MRI input filters by their sum; map class-map inputs BraTS → LiTS (cascade)."""
    weight = conv.conv.weight  # out × (4 [+ 5]) × k × k
    parts = [weight[:, :BRATS_CHANNELS].sum(dim=1, keepdim=True)]
    if class_maps:
        parts.append(weight[:, BRATS_CHANNELS : BRATS_CHANNELS + brats_classes][:, BRATS_TO_LITS_CLASSES])
    conv.conv.weight = nn.Parameter(torch.cat(parts, dim=1).contiguous())
    conv.conv.in_channels = conv.conv.weight.shape[1]


def transfer_from_brats(model: nn.Module, source: nn.Module) -> None:
    """Load a BraTS model's weights into a 1-channel, 3-class LiTS model of the same architecture.

    ``source`` is adapted in place (:func:`adapt_input_layer`); the final output layer keeps its
    fresh initialisation; a cascade's first output layer (feeding the second net) keeps the BraTS
    filters of the classes mapped to LiTS.
    """
    cascade = isinstance(source, InputCascadeCNN)
    for net, maps in ([(source.first, 0), (source.second, BRATS_CLASSES)] if cascade else [(source, 0)]):
        adapt_input_layer(net.local_path[0], maps)
        adapt_input_layer(net.global_path[0], maps)
    final = "second.output_layer." if cascade else "output_layer."
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(final)}
    if cascade:
        for key in ("first.output_layer.weight", "first.output_layer.bias"):
            state[key] = state[key][BRATS_TO_LITS_CLASSES]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(final) for k in missing):
        raise DataError(None, f"BraTS weights do not fit the LiTS model (missing {missing[:3]}, unexpected {unexpected[:3]})")
