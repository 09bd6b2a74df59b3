"""``--part K/N``: split a list of cases across the jobs of a batch scheduler's array."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from medchallenge.core.errors import OptionError

T = TypeVar("T")


def parse_part(spec: str | None) -> tuple[int, int]:
    """``"K/N"`` (1-based K) → (K, N); None → (1, 1)."""
    if spec is None or spec == "":
        return 1, 1
    try:
        k_str, n_str = spec.split("/")
        k, n = int(k_str), int(n_str)
    except ValueError as err:
        raise OptionError(f"--part {spec}: expected K/N, e.g. 2/8") from err
    if n < 1 or not 1 <= k <= n:
        raise OptionError(f"--part {spec}: expected 1 <= K <= N")
    return k, n


def select_part(items: Sequence[T], spec: str | None) -> list[T]:
    """Part K of N of ``items``: every N-th item starting at K-1 (balanced, order kept)."""
    k, n = parse_part(spec)
    return list(items[k - 1 :: n])


def parse_case_range(spec: str | None) -> list[int] | None:
    """``"0-19,25,30-31"`` → [0..19, 25, 30, 31]; None → None (all)."""
    if spec is None or spec.strip() == "":
        return None
    out: list[int] = []
    try:
        for chunk in spec.split(","):
            chunk = chunk.strip()
            if "-" in chunk:
                lo, hi = chunk.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            elif chunk:
                out.append(int(chunk))
    except ValueError as err:
        raise OptionError(f"cannot read the list '{spec}': expected numbers and ranges like 0-19,25") from err
    return out
