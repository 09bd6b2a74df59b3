"""Havaei models: exact shapes, maxout, fully convolutional = per patch, phase 2 and transfer trainable sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medchallenge.brats.metrics import region_dice
from medchallenge.havaei.inference import segment_slices
from medchallenge.havaei.models import InputCascadeCNN, MaxoutConv2d, TwoPathCNN, path_parameters
from medchallenge.havaei.trainer import extract_patch
from medchallenge.lits.models import adapt_input_layer, transfer_from_brats
from medchallenge.lits.train import set_trainable


def test_shapes() -> None:
    two = TwoPathCNN()
    assert two(torch.zeros(2, 4, 33, 33)).shape == (2, 5, 1, 1)
    assert two(torch.zeros(1, 4, 60, 70)).shape == (1, 5, 28, 38)
    assert two.local_path(torch.zeros(1, 4, 33, 33)).shape == (1, 64, 21, 21)
    assert two.global_path(torch.zeros(1, 4, 33, 33)).shape == (1, 160, 21, 21)
    cascade = InputCascadeCNN()
    assert cascade.first(torch.zeros(1, 4, 65, 65)).shape == (1, 5, 33, 33)
    assert cascade(torch.zeros(2, 4, 65, 65)).shape == (2, 5, 1, 1)


def test_maxout_with_equal_pieces_is_one_conv() -> None:
    maxout = MaxoutConv2d(3, 4, 3, pieces=2)
    with torch.no_grad():
        maxout.conv.weight[4:] = maxout.conv.weight[:4]
        maxout.conv.bias[4:] = maxout.conv.bias[:4]
    conv = nn.Conv2d(3, 4, 3)
    conv.load_state_dict({"weight": maxout.conv.weight[:4], "bias": maxout.conv.bias[:4]})
    x = torch.rand(2, 3, 9, 9)
    torch.testing.assert_close(maxout(x), conv(x))


def test_whole_slice_equals_per_patch() -> None:
    torch.manual_seed(0)
    model = TwoPathCNN(in_channels=2, num_classes=3).eval()
    images = np.random.default_rng(0).normal(size=(2, 1, 6, 5)).astype(np.float32)
    whole = segment_slices(model, images, torch.device("cpu"))[0]
    for y in range(6):
        for x in range(5):
            patch = torch.from_numpy(extract_patch(images, 0, y, x, 33))[None]
            assert int(model(patch).argmax()) == whole[y, x]


def test_phase_two_changes_only_the_output_layer() -> None:
    model = TwoPathCNN()
    for p in model.parameters():
        p.requires_grad = False
    for p in path_parameters(model)["output"]:
        p.requires_grad = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.rand(4, 4, 33, 33)).flatten(1), torch.tensor([0, 1, 2, 4]))
    loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"output_layer.weight", "output_layer.bias"}


@pytest.mark.parametrize(("mode", "expected"), [
    ("local", {"local_path", "output_layer"}), ("global", {"global_path", "output_layer"}),
    ("both", {"local_path", "global_path", "output_layer"}), ("e2e", {"local_path", "global_path", "output_layer"}),
])
def test_transfer_trainable_sets(mode: str, expected: set[str]) -> None:
    model = TwoPathCNN(1, 3)
    set_trainable(model, mode)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    cascade = InputCascadeCNN(1, 3)
    set_trainable(cascade, mode)
    first_trainable = any(p.requires_grad for p in cascade.first.parameters())
    assert first_trainable == (mode == "e2e")


def test_ct_input_adaptation_keeps_the_replicated_response() -> None:
    torch.manual_seed(0)
    brats = TwoPathCNN(4, 5).eval()
    source = TwoPathCNN(4, 5)
    source.load_state_dict(brats.state_dict())
    lits = TwoPathCNN(1, 3).eval()
    transfer_from_brats(lits, source)
    ct = torch.rand(1, 1, 33, 33)
    torch.testing.assert_close(lits.local_path(ct), brats.local_path(ct.repeat(1, 4, 1, 1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lits.global_path(ct), brats.global_path(ct.repeat(1, 4, 1, 1)), atol=1e-5, rtol=1e-5)
    conv = MaxoutConv2d(9, 2, 3)
    adapt_input_layer(conv, class_maps=5)
    assert conv.conv.weight.shape[1] == 4


def test_region_dice() -> None:
    truth = np.array([0, 1, 2, 4, 4, 0])
    pred = np.array([0, 1, 2, 2, 4, 0])
    d = region_dice(pred, truth)
    assert d["wt_dice"] == 1.0  # {1,2,4} identical as a set of voxels
    assert d["tc_dice"] == pytest.approx(2 * 2 / (2 + 3))
    assert d["et_dice"] == pytest.approx(2 * 1 / (1 + 2))
    assert region_dice(np.zeros(3), np.zeros(3))["et_dice"] == 1.0  # both empty
    assert region_dice(np.array([4, 0]), np.zeros(2))["et_dice"] == 0.0  # prediction only
