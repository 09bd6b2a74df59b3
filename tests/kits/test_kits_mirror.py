"""KiTS training mirroring (issue 14): each training crop flipped in H and W with p 0.5 each, the
label with it; ``--no-mirror`` flips nothing. (The option reaching the Dataset and the run's records:
test_kits_runs.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medchallenge.core.seeding import seed_everything
from medchallenge.kits.train import SliceDataset

SIZE = 8  # px: the crop is the whole slice, so only mirroring changes it


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    """A one-slice cache: an image with a distinct value per pixel, a label that is not mirror-symmetric."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = np.arange(SIZE * SIZE, dtype=np.float16).reshape(1, SIZE, SIZE)
    label = np.zeros((1, SIZE, SIZE), np.uint8)
    label[0, 1:3, 1:4] = 1  # kidney near the top-left corner
    label[0, 6, 5] = 2  # tumour in the lower right
    np.save(tmp_path / "images" / "case_00000.npy", image)
    np.save(tmp_path / "labels" / "case_00000.npy", label)
    return tmp_path


def _draws(cache: Path, mirror: bool, n: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = pd.DataFrame({"case": ["case_00000"] * n, "slice": [0] * n})
    dataset = SliceDataset(cache, rows, SIZE, background=-2.0, augment=True, mirror=mirror)
    seed_everything(0)
    out = []
    for i in range(n):
        image, label = dataset[i]
        assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32 and label.dtype == torch.int64
        out.append((image[0].numpy(), label.numpy()))
    return out


def _flip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(a, axes) if axes else a


VIEWS: tuple[tuple[int, ...], ...] = ((), (1,), (0,), (0, 1))  # none, W, H, both


def _views(cache: Path) -> list[tuple[int, ...]]:
    """Which mirroring each draw is, checking the label moved the same way as the image."""
    image0 = np.load(cache / "images" / "case_00000.npy")[0].astype(np.float32)
    label0 = np.load(cache / "labels" / "case_00000.npy")[0].astype(np.int64)
    seen = []
    for image, label in _draws(cache, mirror=True):
        views = [axes for axes in VIEWS if np.array_equal(image, _flip(image0, axes))]
        assert len(views) == 1, "every draw is one of the four mirrorings of the slice"
        assert np.array_equal(label, _flip(label0, views[0])), f"label not flipped like the image ({views[0]})"
        seen.append(views[0])
    return seen


def test_mirror_yields_all_four_flips_with_the_label_moved_the_same_way(cache: Path) -> None:
    seen = _views(cache)
    counts = {axes: seen.count(axes) for axes in VIEWS}
    assert all(c >= 5 for c in counts.values()), counts  # p 0.5 per axis: about 16 of 64 each
    assert _views(cache) == seen, "the draws are reproducible from the seed"


def test_no_mirror_yields_the_slice_as_it_is(cache: Path) -> None:
    image0 = np.load(cache / "images" / "case_00000.npy")[0].astype(np.float32)
    label0 = np.load(cache / "labels" / "case_00000.npy")[0].astype(np.int64)
    for image, label in _draws(cache, mirror=False):
        assert np.array_equal(image, image0) and np.array_equal(label, label0)
