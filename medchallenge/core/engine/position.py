"""Where a run stands inside an epoch, so a pre-empted run resumes at the same step.

A scheduler's SIGTERM (time limit, pre-emption) or ``--checkpoint-every`` saves the epoch, the
batches done, the running loss and every random-number state. On resume the epoch's loader is
rebuilt from the same per-epoch seed (same order), the finished batches are skipped, and the
random states are restored: the rest of the run is what it would have been without the stop.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class EpochPosition:
    """An epoch (0-based) in progress: batches done, their summed loss and count, random states."""

    epoch: int
    batches_done: int = 0
    loss_sum: float = 0.0
    count: int = 0
    rng: dict[str, Any] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "loss_sum": self.loss_sum,
                "count": self.count, "rng": self.rng}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochPosition:
        return cls(int(state["epoch"]), int(state["batches_done"]), float(state["loss_sum"]), int(state["count"]),
                   dict(state.get("rng", {})))


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python random states, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopFlag:
    """Set by SIGTERM/SIGUSR1 while training; the loop stops at the next optimizer step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch the pre-emption signals (main thread only; elsewhere signals cannot be caught)."""
        for sig in PREEMPT_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                return

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
