"""Run per-case preprocessing jobs in a process pool (``--workers N``) or inline, with progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from medchallenge.core.console import track

J = TypeVar("J")
R = TypeVar("R")


def map_jobs(fn: Callable[[J], R], jobs: Sequence[J], workers: int, description: str) -> list[R]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes when there is more than one job.

    ``fn`` and the jobs must be picklable for ``workers > 0``; results keep the jobs' order.
    """
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(track(pool.map(fn, jobs), description, total=len(jobs)))
    return [fn(job) for job in track(jobs, description, total=len(jobs))]
