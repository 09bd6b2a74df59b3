"""Issue 15: ``brats predict`` holds one whole float32 copy of a case. read_case fills one C×S×H×W
array (no per-channel list + stack), segment_case normalises it in place (no second float32 volume,
no float64 channel copies, no per-class probability volume) and gives the labels of the copying way."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medchallenge.brats.data import find_cases, read_case
from medchallenge.brats.predict import segment_case
from medchallenge.brats.sample import write_sample_dataset


class Pointwise(torch.nn.Module):
    """A 1×1 convolution (receptive field 1): segment_case's whole path at a test's cost."""

    receptive_field = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(result, peak bytes numpy/Python allocated during ``fn``) — torch's CPU allocator is not traced."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("brats-mem")
    write_sample_dataset(root, n_cases=3, size=64, n_slices=12)
    return find_cases(Path(root))[0]


def test_read_case_holds_one_copy(case: Any) -> None:
    (images, reference, _), peak = _peak(lambda: read_case(case, with_labels=False))
    assert images.shape == (4, 12, 64, 64) and images.dtype == np.float32
    assert reference.array.size == 0  # the geometry only: the FLAIR voxels live in the stack alone
    assert peak < 1.5 * images.nbytes  # the stack + one channel being read (a list + np.stack was 2×)


def test_segment_case_in_place_is_bounded_and_equal(case: Any) -> None:
    torch.manual_seed(0)
    model = Pointwise().eval()
    images, _, _ = read_case(case, with_labels=False)
    copying = segment_case(model, images.copy(), torch.device("cpu"), batch_size=1)
    labels, peak = _peak(lambda: segment_case(model, images, torch.device("cpu"), batch_size=1, inplace=True))
    np.testing.assert_array_equal(labels, copying)
    assert len(np.unique(labels)) > 1  # a real decision, not an all-background shortcut
    # beyond the input: the brain mask and labels (1/16 each), one channel's brain voxels in float32
    # and a batch of slices; a second float32 volume alone would be 1.0×
    assert peak < 0.6 * images.nbytes, f"{peak / images.nbytes:.2f}× the case"
