"""Names read from metadata that become parts of paths.

An id in a CSV, a JSON file or a folder listing (a PANDA ``image_id``, a KiTS case, a MIDOG file
name, a lymphocytosis patient) is joined onto a folder to read or write a file. A value such as
``../../evil/x`` or ``/etc/passwd`` would then reach outside the dataset or the output folder, so
every such id goes through :func:`check_name` once, where it is read, and is refused with exit 2
naming the file and the row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from medchallenge.core.errors import DataError

# Characters that make a name more than one path component, or an odd one: separators of every
# platform, NUL and other control characters, and a drive colon.
_FORBIDDEN = re.compile(r"[/\\:\x00-\x1f\x7f]")

PANDA_ID = re.compile(r"[0-9a-f]{32}")
"""PANDA image ids are 32 lowercase hex characters (an MD5 of the slide)."""


def name_problem(value: object, pattern: re.Pattern[str] | str | None = None) -> str | None:
    """Why ``value`` is not a plain file-name component, or None when it is one."""
    if not isinstance(value, str):
        return f"{value!r} is not a name (a {type(value).__name__})"
    if value == "" or value.strip() != value:
        return f"{value!r} is empty or has surrounding spaces"
    if _FORBIDDEN.search(value):
        return f"{value!r} contains a path separator or control character"
    if ".." in value or value == ".":
        return f"{value!r} contains '..' or is '.'"
    if pattern is not None and re.fullmatch(pattern, value) is None:
        shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        return f"{value!r} does not match the expected pattern {shown}"
    return None


def check_name(
    value: object,
    source: str | Path | None,
    *,
    what: str = "id",
    where: str | None = None,
    pattern: re.Pattern[str] | str | None = None,
) -> str:
    """Return ``value`` when it is a plain name; else raise DataError naming ``source`` and ``where``.

    Args:
        value: the id as read (a str; anything else is refused).
        source: the file it was read from (named in the error).
        what: what the value is, for the message ("image_id", "case", "patient").
        where: its place in ``source``, e.g. "row 12" or "images[3]".
        pattern: the challenge's own id pattern, matched against the whole value.
    """
    problem = name_problem(value, pattern)
    if problem is not None:
        place = f"{where}: " if where else ""
        raise DataError(source, f"{place}{what} {problem}: ids become file names and must be plain names")
    return value  # type: ignore[return-value]


def check_names(
    values: Iterable[object],
    source: str | Path | None,
    *,
    what: str = "id",
    pattern: re.Pattern[str] | str | None = None,
    first_row: int = 2,
) -> list[str]:
    """:func:`check_name` on a CSV column; row numbers count the header as row 1 (as editors show)."""
    return [
        check_name(value, source, what=what, where=f"row {first_row + i}", pattern=pattern)
        for i, value in enumerate(values)
    ]
