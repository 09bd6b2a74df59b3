"""core.inference: batched = per item; ensembles of one model = the model; flips on an equivariant model = none."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medchallenge.core.inference import segment_batches


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()


def _stack(n: int = 7) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 2, 12, 10)).astype(np.float32)


def test_batched_equals_one_item_at_a_time_and_maps_labels() -> None:
    model, stack = _model(), _stack()
    cpu = torch.device("cpu")
    batched = segment_batches(model, stack, cpu, batch_size=3, labels=[0, 2, 4])
    one = np.concatenate([segment_batches(model, stack[i : i + 1], cpu, batch_size=1, labels=[0, 2, 4])
                          for i in range(len(stack))])
    with torch.no_grad():
        direct = model(torch.from_numpy(stack)).argmax(1).numpy()
    np.testing.assert_array_equal(batched, one)
    np.testing.assert_array_equal(batched, np.array([0, 2, 4], np.uint8)[direct])
    assert set(np.unique(batched)) <= {0, 2, 4}


def test_prepare_runs_per_batch_on_stored_values() -> None:
    model = _model()
    raw = (_stack() * 100).astype(np.int16)
    prepared = segment_batches(model, raw, torch.device("cpu"), batch_size=2, prepare=lambda b: b / 100.0)
    reference = segment_batches(model, raw / 100.0, torch.device("cpu"), batch_size=7)
    np.testing.assert_array_equal(prepared, reference)


def test_ensemble_of_the_same_model_equals_the_model() -> None:
    model, stack = _model(), _stack()
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(segment_batches([model, model], stack, cpu), segment_batches(model, stack, cpu))
    other = _model(seed=5)
    assert not np.array_equal(segment_batches([model, other], stack, cpu), segment_batches(model, stack, cpu))


def test_flips_on_a_flip_equivariant_model_equal_no_flips() -> None:
    model = _model()

    def symmetric(x: torch.Tensor) -> torch.Tensor:  # average over the 4 mirrorings: equivariant to them
        views = [(), (-1,), (-2,), (-2, -1)]
        return sum(model(x.flip(d) if d else x).flip(d) if d else model(x) for d in views) / 4

    stack, cpu = _stack(), torch.device("cpu")
    np.testing.assert_array_equal(segment_batches(symmetric, stack, cpu, flips=True),
                                  segment_batches(symmetric, stack, cpu))
    assert not np.array_equal(segment_batches(model, stack, cpu, flips=True), segment_batches(model, stack, cpu))


def test_allowed_restricts_the_decision() -> None:
    out = segment_batches(_model(), _stack(), torch.device("cpu"), allowed=[0, 2])
    assert set(np.unique(out)) <= {0, 2}
