"""The run's record on disk: metrics.csv (one row per epoch), plots, train.log lines, TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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

    def step(self, global_step: int, loss: float, lr: float) -> None:
        """Per-batch TensorBoard scalars: the batch loss and the learning rate."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def images(self, epoch: int, images: dict[str, Any]) -> None:
        """A few prediction images of an epoch: C×H×W floats in [0, 1] or H×W×C uint8 arrays."""
        if self.writer is None:
            return
        for tag, image in images.items():
            array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
            hwc = array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] not in (1, 3, 4)
            if array.ndim == 2:
                array, hwc = array[None], False
            self.writer.add_image(f"preview/{tag}", array, epoch, dataformats="HWC" if hwc else "CHW")

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The run's options against its best metrics (TensorBoard's HPARAMS tab)."""
        if self.writer is None:
            return
        plain = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
        shown = {f"hparam/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        self.writer.add_hparams(plain, shown, run_name=".")

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
