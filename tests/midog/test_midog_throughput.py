"""MIDOG's samples/s counts patches: a detection batch is a list of images, not one stacked tensor."""

from __future__ import annotations

import torch

from medchallenge.core.engine.steplog import batch_len
from medchallenge.midog.train import MidogTrainer


def test_a_detection_batch_counts_its_patches() -> None:
    images = [torch.zeros(3, 64, 64) for _ in range(5)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)} for _ in range(5)]
    assert batch_len((images, targets)) == 3  # the engine's default would count the channels
    assert MidogTrainer.batch_samples(None, (images, targets)) == 5  # type: ignore[arg-type]
