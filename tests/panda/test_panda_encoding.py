"""Label encodings round-trip, the mosaic layout, and mosaic-level augmentation."""

from __future__ import annotations

import numpy as np
import torch

from medchallenge.panda import encoding as enc
from medchallenge.panda.augment import augment_stack
from medchallenge.panda.models import mosaic, strip


def _logits_from_targets(targets: torch.Tensor) -> torch.Tensor:
    return (targets * 2 - 1) * 10.0


def test_ordinal_round_trip() -> None:
    grades = torch.arange(6)
    targets = enc.ordinal_encode(grades)
    assert targets.tolist()[3] == [1, 1, 1, 0, 0]
    assert enc.decode("ordinal", enc.scores("ordinal", _logits_from_targets(targets))).tolist() == list(range(6))


def test_ordinal_decode_is_rounded_sum() -> None:
    probs = torch.tensor([[0.9, 0.6, 0.4, 0.1, 0.0], [0.2, 0.2, 0.0, 0.0, 0.0]])
    assert enc.decode("ordinal", probs).tolist() == [2, 0]


def test_onehot_round_trip() -> None:
    grades = torch.arange(6)
    targets = enc.onehot_encode(grades)
    assert targets[0].tolist() == [0, 0, 0, 0, 0]
    assert targets[1].tolist() == [0, 0, 0, 0, 1]
    assert targets[5].tolist() == [1, 0, 0, 0, 0]
    assert enc.decode("onehot", enc.scores("onehot", _logits_from_targets(targets))).tolist() == list(range(6))


def test_class_and_tile_vote_decode() -> None:
    logits = torch.nn.functional.one_hot(torch.tensor([3, 0]), 6).float() * 10
    assert enc.decode("class", enc.scores("class", logits)).tolist() == [3, 0]
    # 4 tiles: grades 2, 2, 5, 1 → majority 2; tie 1,1,4,4 → lower grade 1
    tiles = torch.nn.functional.one_hot(torch.tensor([[2, 2, 5, 1], [1, 4, 4, 1]]), 6).float()
    assert enc.decode("tile-vote", tiles).tolist() == [2, 1]
    loss = enc.loss("tile-vote", torch.zeros(2, 4, 6), torch.tensor([1, 2]))
    assert torch.isclose(loss, torch.log(torch.tensor(6.0)))


def test_mosaic_and_strip_layout() -> None:
    x = torch.arange(4 * 2 * 2).reshape(1, 4, 1, 2, 2)
    m = mosaic(x)[0, 0]
    assert m[:2, :2].tolist() == x[0, 0, 0].tolist() and m[:2, 2:].tolist() == x[0, 1, 0].tolist()
    assert m[2:, :2].tolist() == x[0, 2, 0].tolist()
    assert strip(x).shape == (1, 1, 8, 2)
    assert mosaic(torch.ones(1, 3, 1, 2, 2)).shape == (1, 1, 4, 4)  # padded to 2×2 with zeros


def test_mosaic_augmentation_equals_flipping_the_mosaic() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (4, 3, 3, 1), dtype=np.uint8)

    class NoTileFlips:
        """Forces the mosaic-level horizontal flip only."""

        def __init__(self) -> None:
            self.calls = 0

        def random(self, shape=None):  # noqa: ANN001
            if shape is None:
                self.calls += 1
                return 0.0 if self.calls == 1 else 1.0
            return np.ones(shape)

    out = augment_stack(tiles, NoTileFlips(), grid=True)  # type: ignore[arg-type]
    def as_mosaic(t: np.ndarray) -> np.ndarray:
        return mosaic(torch.from_numpy(t).permute(0, 3, 1, 2)[None])[0, 0].numpy()

    np.testing.assert_array_equal(as_mosaic(out), as_mosaic(tiles)[:, ::-1])
