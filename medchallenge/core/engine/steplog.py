"""Progress of a training epoch that a batch user can read.

On a TTY (rank 0) a rich bar shows the running loss and the rate live. Otherwise — under a batch
scheduler, where bars turn into garbage — one plain line every ``every`` seconds says where the
epoch is: step, running loss, learning rate, samples/s, the share of time spent waiting for data,
peak GPU memory, and the time left for the epoch and the run.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from medchallenge.core import console


def batch_len(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor (tuples, lists and dicts searched)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        n = batch_len(item)
        if n:
            return n
    return 0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class StepLog:
    """One epoch's progress; ``update`` after every batch."""

    def __init__(self, epoch: int, epochs: int, total: int, every: float, device: torch.device,
                 start_step: int = 0) -> None:
        self.epoch, self.epochs, self.total, self.every, self.device = epoch, epochs, total, every, device
        self.start_step = start_step
        self.started = self.last = time.perf_counter()
        self.samples = 0
        self.wait = 0.0
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> StepLog:
        if console.interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                     console=console.err_console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task(f"epoch {self.epoch + 1}/{self.epochs}", total=self.total,
                                               completed=self.start_step, postfix="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def rate(self) -> float:
        """Samples per second over the batches trained in this epoch so far."""
        return self.samples / max(time.perf_counter() - self.started, 1e-9)

    def wait_share(self) -> float:
        """The share (0-1) of this epoch's time so far spent waiting for the next batch."""
        return self.wait / max(time.perf_counter() - self.started, 1e-9)

    def update(self, step: int, loss: float, lr: float, samples: int, wait_s: float) -> None:
        """After batch ``step`` (1-based): running mean ``loss``, current ``lr``, batch size, data wait."""
        self.samples += samples
        self.wait += wait_s
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        rate = self.samples / elapsed
        if self.progress is not None:
            self.progress.update(self.task, completed=step, postfix=f"loss {loss:.4g} {rate:.1f}/s")
            return
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        console.log(self.line(step, loss, lr, rate, elapsed))

    def line(self, step: int, loss: float, lr: float, rate: float, elapsed: float) -> str:
        done = max(step - self.start_step, 1)
        per_step = elapsed / done
        epoch_left = per_step * (self.total - step)
        run_left = epoch_left + per_step * self.total * (self.epochs - self.epoch - 1)
        text = (f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.total} loss {loss:.4g} lr {lr:.3g}"
                f" {rate:.1f} samples/s data-wait {100 * self.wait / elapsed:.0f}%")
        if self.device.type == "cuda":
            text += f" gpu {torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GB"
        return text + f" eta {_duration(epoch_left)} (run {_duration(run_left)})"
