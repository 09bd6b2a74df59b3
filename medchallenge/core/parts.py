"""``--part K/N``: split a list of cases across the jobs of a batch scheduler's array.

Outputs written one file per case need nothing more. A predict that writes one file for all its
items (submission.csv, detections.json) follows one rule in every challenge:

1. part K of N writes ``<stem>.part-K-of-N<suffix>`` next to where the whole file goes
   (:func:`part_path`), so the jobs never collide;
2. the job that finds all N parts written, each made by its own checkpoint and options, joins
   them into the whole file (:func:`merge_when_complete`); rerunning any finished part merges too,
   as it skips its own work;
3. ``evaluate --predictions DIR`` reads the whole file, or joins the parts itself when all N are
   there, and names the missing ones otherwise (:func:`complete_parts`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from medchallenge.core.errors import DataError, OptionError

if TYPE_CHECKING:
    from medchallenge.core.manifest import PredictionManifest

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


PART_NAME = re.compile(r"\.part-(\d+)-of-(\d+)$")


def part_path(target: Path, spec: str | None) -> Path:
    """``target`` itself, or ``<stem>.part-K-of-N<suffix>`` beside it for ``--part K/N``."""
    if spec is None:
        return Path(target)
    k, n = parse_part(spec)
    target = Path(target)
    return target.with_name(f"{target.stem}.part-{k}-of-{n}{target.suffix}")


def find_parts(target: Path) -> tuple[int, dict[int, Path]]:
    """(N, {K: path}) of the part files of ``target`` in its folder; (0, {}) when there are none.

    Raises:
        DataError: parts of different N (stale files of another array job).
    """
    target = Path(target)
    found: dict[tuple[int, int], Path] = {}
    for path in target.parent.glob(f"{target.stem}.part-*-of-*{target.suffix}"):
        match = PART_NAME.search(path.name.removesuffix(target.suffix))
        if match and path.name.startswith(f"{target.stem}.part-"):
            found[int(match[1]), int(match[2])] = path
    totals = sorted({n for _, n in found})
    if len(totals) > 1:
        raise DataError(target.parent, f"{target.name} parts of different --part N ({', '.join(f'of {n}' for n in totals)}):"
                                       " remove the stale ones")
    return (totals[0], {k: p for (k, _), p in found.items()}) if totals else (0, {})


def complete_parts(target: Path) -> list[Path]:
    """All N part files of ``target`` in order of K.

    Raises:
        DataError: no parts at all, or some missing (named).
    """
    n, parts = find_parts(target)
    if not n:
        raise DataError(Path(target).parent, f"no {Path(target).name} (nor its .part-K-of-N files): run predict")
    missing = [k for k in range(1, n + 1) if k not in parts]
    if missing:
        raise DataError(Path(target).parent, f"no {Path(target).name}: part(s) {', '.join(f'{k}/{n}' for k in missing)}"
                                             " not written yet; run them (or rerun any part) to merge")
    return [parts[k] for k in range(1, n + 1)]


def merge_when_complete(target: Path, spec: str | None, join: Callable[[list[Path], Path], None],
                        manifest: PredictionManifest | None = None) -> Path | None:
    """After part ``spec`` is written: join all N parts into ``target`` when every one is there and (with a
    ``manifest``) made by its checkpoint and options; record ``target``. Returns it, or None (not yet)."""
    from medchallenge.core import console

    if spec is None:
        return None
    n = parse_part(spec)[1]
    files = [part_path(target, f"{k}/{n}") for k in range(1, n + 1)]
    if not all(f.is_file() for f in files):
        return None
    if manifest is not None and not all(manifest.made_here(f.name) for f in files):
        console.log(f"not merging {target} yet: some parts were made by another checkpoint or options")
        return None
    join(files, Path(target))
    if manifest is not None:
        manifest.record(Path(target).name)
    console.log(f"all {n} part(s) written: merged into {target}")
    return Path(target)
