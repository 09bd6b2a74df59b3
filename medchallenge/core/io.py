"""Atomic file writes and validated CSV reading.

A killed process must never leave a half file that a later run takes as complete: every output
is written to a temporary file in the same folder and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.jsonio import dumps_json, strict_json  # noqa: F401 (re-exported)

TMP_SUFFIX = ".partial"


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it to ``path``, else delete it.

    For writers that want a file name (SimpleITK, tifffile, torch.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX + path.suffix, dir=path.parent)
    # mkstemp creates 0600 whatever the umask; give the file the mode open() would, so colleagues
    # on a shared server can read submissions, caches and checkpoints as the user's umask allows
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (undefined numbers as ``null``), atomically."""
    text = dumps_json(obj, indent=2)
    with atomic_open(path) as handle:
        handle.write(text + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV without its index, atomically."""
    with atomic_open(path) as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")


def read_csv(path: str | Path, required: Sequence[str] = (), **kwargs: Any) -> pd.DataFrame:
    """Read a CSV and check that it has the ``required`` columns.

    Raises:
        DataError: the file is missing, unreadable, empty or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable CSV ({str(err).splitlines()[0]})") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}")
    return frame


def remove_partials(folder: str | Path) -> int:
    """Delete leftover temporary files of killed runs under ``folder``; returns how many."""
    count = 0
    for tmp in Path(folder).rglob(f"*{TMP_SUFFIX}*"):
        if tmp.is_file():
            tmp.unlink()
            count += 1
    return count
