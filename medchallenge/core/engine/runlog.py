"""The run's record on disk: metrics.csv (one row per epoch), plots, train.log lines, TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import OptionError
from medchallenge.core.io import write_csv
from medchallenge.core.jsonio import strict_json
from medchallenge.core.plots import plot_training_curves


class RunLog:
    """Epoch rows of one run; rank 0 writes them (``write=False`` on the other ranks)."""

    def __init__(self, run_dir: Path, monitor: str, epochs: int, write: bool, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.epochs = epochs
        self.write = write
        self.history: list[dict[str, Any]] = []
        self.writer: Any = None
        self.open_tensorboard(tensorboard)

    def open_tensorboard(self, wanted: bool) -> None:
        """Start the TensorBoard writer in RUN/tensorboard (rank 0; once the run folder exists)."""
        if wanted and self.write and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def restore(self, history: list[dict[str, Any]], epochs_done: int) -> None:
        """Continue the rows of a resumed run (the rows after its last checkpoint are dropped)."""
        self.history = list(history)[:epochs_done]

    def add(self, row: dict[str, Any], improved: bool) -> None:
        """Record one epoch: metrics.csv, plots, TensorBoard scalars and one log line."""
        self.history.append(row)
        if not self.write:
            return
        write_csv(self.run_dir / "metrics.csv", pd.DataFrame(self.history))
        plot_training_curves(self.history, self.run_dir / "plots", monitor=self.monitor)
        if self.writer is not None:
            for key, val in row.items():
                if isinstance(val, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, val, row["epoch"])
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "epoch")
        console.log(f"epoch {row['epoch']}/{self.epochs}: {shown}{' *' if improved else ''}")

    def json_history(self) -> list[dict[str, Any]]:
        return strict_json(self.history)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def require_tensorboard() -> None:
    """Fail at once (before the run folder exists) when --tensorboard is asked for without the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise OptionError("--tensorboard needs the optional extra: pip install 'medchallenge[tensorboard]'") from err


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
