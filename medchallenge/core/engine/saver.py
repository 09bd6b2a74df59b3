"""Checkpoint saving in the spirit of timm's CheckpointSaver: last.pt every epoch, best.pt by metric.

Both are written atomically (temp file + ``os.replace``), so a kill never leaves a half file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medchallenge.core.checkpoint import save_checkpoint


class CheckpointSaver:
    """Tracks the best value of ``monitor`` and writes best.pt / last.pt into ``run_dir``."""

    def __init__(self, run_dir: Path, monitor: str, mode: str = "max",
                 tiebreak: tuple[str, str] | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor mode {mode!r}: expected 'max' or 'min'")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        # (key, mode) deciding between epochs whose monitored values are equal: a small validation set
        # reaches a perfect tuned score early, and without it the least trained of those epochs would win
        self.tiebreak = tiebreak
        self.best_value: float | None = None
        self.best_tiebreak: float | None = None

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def improves(self, row: dict[str, Any]) -> bool:
        """Whether ``row[monitor]`` is finite and better than the best so far (updates the best)."""
        value = row.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return False
        value = float(value)
        second = self._tiebreak_value(row)
        if self.best_value is None or _better(value, self.best_value, self.mode):
            better = True
        elif value == self.best_value and self.tiebreak is not None and second is not None:
            better = self.best_tiebreak is None or _better(second, self.best_tiebreak, self.tiebreak[1])
        else:
            better = False
        if better:
            self.best_value, self.best_tiebreak = value, second
        return better

    def _tiebreak_value(self, row: dict[str, Any]) -> float | None:
        if self.tiebreak is None:
            return None
        value = row.get(self.tiebreak[0])
        return float(value) if value is not None and math.isfinite(float(value)) else None

    def save(self, payload: Callable[[], dict[str, Any]], train_state: dict[str, Any], improved: bool) -> None:
        """Write best.pt when ``improved`` (or when there is none yet) and always last.pt (with train_state)."""
        body = payload()
        if improved or not self.best_path.exists():
            save_checkpoint(self.best_path, body)
        save_checkpoint(self.last_path, {**body, "train_state": {**train_state, **self.best_state()}})

    def best_state(self) -> dict[str, float | None]:
        """What a resumed run needs to keep choosing best.pt the same way."""
        return {"best_value": self.best_value, "best_tiebreak": self.best_tiebreak}

    def save_last(self, payload: Callable[[], dict[str, Any]], train_state: dict[str, Any]) -> None:
        """Write only last.pt (a position inside an epoch: best.pt is chosen at epoch ends)."""
        save_checkpoint(self.last_path, {**payload(), "train_state": {**train_state, **self.best_state()}})


def _better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best
