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

    def __init__(self, run_dir: Path, monitor: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor mode {mode!r}: expected 'max' or 'min'")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.best_value: float | None = None

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
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if better:
            self.best_value = value
        return better

    def save(self, payload: Callable[[], dict[str, Any]], train_state: dict[str, Any], improved: bool) -> None:
        """Write best.pt when ``improved`` (or when there is none yet) and always last.pt (with train_state)."""
        body = payload()
        if improved or not self.best_path.exists():
            save_checkpoint(self.best_path, body)
        save_checkpoint(self.last_path, {**body, "train_state": {**train_state, "best_value": self.best_value}})

    def save_last(self, payload: Callable[[], dict[str, Any]], train_state: dict[str, Any]) -> None:
        """Write only last.pt (a position inside an epoch: best.pt is chosen at epoch ends)."""
        save_checkpoint(self.last_path, {**payload(), "train_state": {**train_state, "best_value": self.best_value}})
