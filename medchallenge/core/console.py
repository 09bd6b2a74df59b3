"""Console output: rich progress on a TTY on rank 0, plain timestamped lines otherwise.

Batch schedulers capture stdout into files where progress bars turn into garbage, so when stdout
is not a terminal every message is one plain line with a timestamp. Only rank 0 prints.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

LOGGER_NAME = "medchallenge"
logger = logging.getLogger(LOGGER_NAME)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and outside torchrun)."""
    return _rank() == 0


def interactive() -> bool:
    """True when progress bars are wanted: a TTY on stderr, rank 0, not disabled."""
    if os.environ.get("MEDCHALLENGE_PLAIN"):
        return False
    return is_main_process() and sys.stderr.isatty()


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        return f"{stamp} {level}{record.getMessage()}"


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a line is logged.

    A handler bound to the stream of the first call keeps writing to it after it is replaced or
    closed (test runners, notebooks, a command called from Python twice), which loses the lines.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        if interactive():  # through rich's console, so a line prints above a live progress bar
            try:
                err_console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
            except Exception:  # noqa: BLE001 - logging must never raise
                self.handleError(record)
            return
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool = False) -> None:
    """Configure the package logger once: one plain timestamped line per message on stderr."""
    if getattr(logger, "_medchallenge_configured", False):
        return
    handler = _CurrentStderr()
    handler.setFormatter(_PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    logger._medchallenge_configured = True  # type: ignore[attr-defined]
    if not is_main_process():
        logger.setLevel(logging.WARNING)


def add_file_log(path: Path) -> logging.Handler:
    """Also write every log line to ``path`` (the run's train.log); returns the handler."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_PlainFormatter())
    logger.addHandler(handler)
    return handler


def log(message: str) -> None:
    """Log an information line (rank 0 only)."""
    setup_logging()
    logger.info(message)


def warn(message: str) -> None:
    """Log a warning line (rank 0 only)."""
    setup_logging()
    logger.warning(message)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on a TTY, else log progress about every 10%."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if interactive():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[postfix]}"),
        )
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task(description, total=total, postfix="")
            for item in items:
                yield item
                progress.advance(task)
        return
    # batch jobs: a line about every 10% of the work, but never more than one per 10 s
    step = max(1, (total or 0) // 10)
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if total and done % step == 0 and now - last >= 10.0:
            log(f"{description}: {done}/{total} ({now - start:.1f}s)")
            last = now
