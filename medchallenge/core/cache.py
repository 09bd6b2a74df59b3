"""One cache folder type for every ``tile``: settings recorded once, one rule when they change.

A cache is a folder with ``meta.json`` — ``{"kind", "format", "version", "settings"}`` — and one
file (or folder) per finished item. The rule, the same for every challenge:

- settings that differ from the cache's are an error naming each one (old → new), unless
  ``--overwrite``, which redoes this run's items and records the new settings;
- finished items are skipped (an item is finished when its marker file exists: written last,
  atomically, so a killed run never leaves an item that looks finished);
- ``--part K/N`` takes every N-th pending item, so array jobs split the work;
- leftover temporary files of killed runs are removed when the cache is opened for writing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from medchallenge import __version__
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import remove_partials, write_json
from medchallenge.core.jsonio import strict_json
from medchallenge.core.parts import select_part

T = TypeVar("T")
FORMAT = 1


class CacheDir:
    """A preprocessing cache of one ``kind`` ("kits-slices", "panda-tiles") at ``root``."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root)
        self.kind = kind

    @property
    def meta_file(self) -> Path:
        return self.root / "meta.json"

    def settings(self) -> dict[str, Any]:
        """The settings the cache was made with; a DataError when ``root`` is not a cache of this kind."""
        if not self.meta_file.is_file():
            raise DataError(self.root, f"not a {self.kind} cache (no meta.json): run `tile` first")
        try:
            meta = json.loads(self.meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(self.meta_file, f"unreadable cache metadata ({err})") from err
        if not isinstance(meta, dict) or meta.get("kind") != self.kind:
            found = meta.get("kind") if isinstance(meta, dict) else None
            challenge = self.kind.split("-")[0]
            raise DataError(self.root, f"a cache of kind {found!r}, expected {self.kind!r} (or of an older format, made by"
                                       f" an older version): re-run `medchallenge {challenge} tile --overwrite` to rebuild it")
        return dict(meta.get("settings", {}))

    def open_for_writing(self, settings: dict[str, Any], overwrite: bool = False) -> None:
        """Create the cache or check that ``settings`` equal its own; record them.

        Raises:
            OptionError: a setting differs from the cache's and ``overwrite`` is off.
        """
        settings = strict_json(settings)
        if self.meta_file.is_file() and not overwrite:  # --overwrite rebuilds whatever was there
            try:
                old = self.settings()
            except DataError as err:
                raise OptionError(f"{err}, or choose another --cache") from err
            changed = self._changes(old, settings)
            if changed:
                raise OptionError(
                    f"{self.root} was made with other settings ({'; '.join(changed)}): pass --overwrite to"
                    " rebuild it with the new ones, or choose another --cache/--out"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        remove_partials(self.root)
        write_json(self.meta_file, {"kind": self.kind, "format": FORMAT, "version": __version__, "settings": settings})

    @staticmethod
    def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """``"key: old → new"`` for every setting that differs (a missing one reads "unset")."""
        changes = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new or old[key] != new[key]:
                changes.append(f"{key}: {old.get(key, 'unset')} → {new.get(key, 'unset')}")
        return changes

    def pending(self, items: Sequence[T], marker: Callable[[T], Path], part: str | None = None,
                overwrite: bool = False) -> list[T]:
        """This part's items (``--part K/N``) whose marker file is missing (all of them with ``overwrite``)."""
        mine = select_part(items, part)
        return mine if overwrite else [item for item in mine if not marker(item).exists()]
