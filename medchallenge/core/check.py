"""What every ``<challenge> check --data DIR`` reports: problems with their files, counts, ranges.

A check reads layouts, metadata and headers (never whole images) and collects every problem
instead of stopping at the first, so a user fixes a dataset in one pass before hours of ``tile``.
A problem that would stop ``tile`` is blocking (exit 2); others are warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from medchallenge.core.errors import MedchallengeError
from medchallenge.core.jsonio import strict_json

T = TypeVar("T")


@dataclass
class Problem:
    """One problem: the file, what is wrong, and whether ``tile`` would stop on it."""

    path: str
    problem: str
    blocking: bool = True


@dataclass
class CheckReport:
    """The result of checking one dataset folder."""

    challenge: str
    data: Path
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"train": 163, "test": 42, "label 1": 113}
    ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # e.g. {"spacing z (mm)": (0.5, 5.0)}
    problems: list[Problem] = field(default_factory=list)

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    def add(self, path: str | Path, problem: str, blocking: bool = True) -> None:
        self.problems.append(Problem(str(path), problem, blocking))

    def exit_code(self) -> int:
        """2 when a problem would stop ``tile``, else 0."""
        return 2 if self.blocking else 0

    def to_json(self) -> dict[str, Any]:
        return strict_json({"challenge": self.challenge, "data": str(self.data.absolute()), "counts": self.counts,
                            "ranges": {k: list(v) for k, v in self.ranges.items()},
                            "problems": [vars(p) for p in self.problems], "ok": not self.blocking})


def check_each(items: Sequence[T], check: Callable[[T], Any], report: CheckReport, path_of: Callable[[T], Path],
               workers: int = 0) -> list[Any]:
    """Run ``check`` on every item (in ``workers`` processes), turning each expected error into a problem.

    Returns the results of the items that passed (None for the others), in order.
    """
    from medchallenge.core.parallel import map_jobs

    results = map_jobs(_guarded, [(check, item) for item in items], workers, "check")
    out: list[Any] = []
    for item, (value, error, where) in zip(items, results):
        if error is not None:
            report.add(_more_specific(path_of(item), where), error)
        out.append(value)
    return out


def _more_specific(item: Path, named: str | None) -> Path:
    """The file an error names when it lies inside the item (a case's label file), else the item itself."""
    if named is None:
        return Path(item)
    inside = Path(named) == Path(item) or Path(item) in Path(named).parents
    return Path(named) if inside else Path(item)


def _guarded(job: tuple[Callable[[Any], Any], Any]) -> tuple[Any, str | None, str | None]:
    check, item = job
    try:
        return check(item), None, None
    except MedchallengeError as err:
        path = getattr(err, "path", None)
        return None, getattr(err, "problem", str(err)), None if path is None else str(path)


def value_range(values: Iterable[Any]) -> tuple[Any, Any]:
    """(min, max) of the values that are not None; (None, None) when there are none."""
    kept = [v for v in values if v is not None]
    return (min(kept), max(kept)) if kept else (None, None)


def print_report(report: CheckReport) -> None:
    """Rich tables on stdout: counts and ranges, then every problem with its file."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table("what", "value", title=f"{report.challenge} check: {report.data}")
    for key, count in report.counts.items():
        summary.add_row(key, str(count))
    for key, (low, high) in report.ranges.items():
        summary.add_row(key, f"{low} … {high}")
    console.print(summary)
    if not report.problems:
        console.print("[green]no problems found[/green]")
        return
    problems = Table("file", "problem", "stops tile", title=f"{len(report.problems)} problem(s)")
    for p in report.problems:
        problems.add_row(p.path, p.problem, "[red]yes[/red]" if p.blocking else "no")
    console.print(problems)


def emit(report: CheckReport, as_json: bool) -> None:
    """Print the report (tables, or one JSON object with ``--json``); exit 2 when a problem would stop ``tile``."""
    import typer

    from medchallenge.core.jsonio import dumps_json

    if as_json:
        typer.echo(dumps_json(report.to_json()))
    else:
        print_report(report)
    if report.blocking:
        raise typer.Exit(report.exit_code())
