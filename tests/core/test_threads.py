"""core.device.fit_threads: PyTorch's CPU threads fit the CPUs a batch scheduler granted."""

from __future__ import annotations

import os

import pytest
import torch

from medchallenge.core.device import fit_threads, resolve_device


@pytest.fixture
def threads():  # noqa: ANN201
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("threads")
def test_threads_follow_the_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert fit_threads() == 3 and torch.get_num_threads() == 3
    torch.set_num_threads(8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on the node share the granted CPUs
    assert fit_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert fit_threads() == 2  # never raised above what PyTorch chose


@pytest.mark.usefixtures("threads")
def test_omp_num_threads_wins_and_resolve_device_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    torch.set_num_threads(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert fit_threads() == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    resolve_device("cpu")
    assert torch.get_num_threads() == 1
