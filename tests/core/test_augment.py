"""core.augment.random_mirror: image and label flipped together, each axis about half the time."""

from __future__ import annotations

import numpy as np

from medchallenge.core.augment import random_mirror


def test_image_and_label_get_the_same_flips_and_every_combination_occurs() -> None:
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # C×H×W
    label = np.arange(3 * 4).reshape(3, 4)  # H×W: each value is its own position
    rng = np.random.default_rng(0)
    seen: dict[tuple[bool, bool], int] = {}
    for _ in range(400):
        im, lab = random_mirror([image, label], rng)
        flip_h, flip_w = bool(lab[0, 0] // 4 == 2), bool(lab[0, 0] % 4 == 3)  # where the corner came from
        seen[flip_h, flip_w] = seen.get((flip_h, flip_w), 0) + 1
        expected = image[:, ::-1] if flip_h else image
        expected = expected[..., ::-1] if flip_w else expected
        np.testing.assert_array_equal(im, expected)
        np.testing.assert_array_equal(lab, expected[0].astype(int))  # label moved exactly like the image
    assert set(seen) == {(False, False), (True, False), (False, True), (True, True)}
    assert all(60 < n < 140 for n in seen.values())  # each combination about a quarter of the time


def test_probability_zero_and_one() -> None:
    a = np.arange(6).reshape(2, 3)
    (same,) = random_mirror([a], np.random.default_rng(1), p=0.0)
    np.testing.assert_array_equal(same, a)
    (both,) = random_mirror([a], np.random.default_rng(1), p=1.0)
    np.testing.assert_array_equal(both, a[::-1, ::-1])
