"""Predictions that know their model: which checkpoint and options made each output.

``predict`` skips an output that exists only when the same checkpoint (by content hash) and the
same options made it; after retraining, outputs of the old model are redone, and the log says so.
Each output gets a small record in ``OUT/.manifest/<name>.json`` (one file per output, written
atomically, so the parts of an array job never write the same file), and ``OUT/manifest.json``
says which checkpoint and options the folder was last written with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from medchallenge.core import console
from medchallenge.core.io import write_json
from medchallenge.core.jsonio import dumps_json, strict_json


@lru_cache(maxsize=16)
def file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_hash(path: Path) -> str:
    stat = Path(path).stat()
    return file_sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


class PredictionManifest:
    """The provenance of the outputs in ``out`` made by ``checkpoint`` with ``options``."""

    def __init__(self, out: Path, checkpoint: Path | Sequence[Path], options: dict[str, Any]) -> None:
        self.out = Path(out)
        members = [Path(checkpoint)] if isinstance(checkpoint, (str, Path)) else [Path(c) for c in checkpoint]
        self.checkpoints = members
        self.checkpoint = members[0]
        hashes = [checkpoint_hash(c) for c in members]
        # an ensemble is identified by its members in order (the average does not depend on the order,
        # but a different list is a different model to the user)
        self.sha256 = hashes[0] if len(hashes) == 1 else hashlib.sha256(",".join(hashes).encode()).hexdigest()
        self.options = strict_json(options)
        self.options_key = hashlib.sha256(dumps_json(self.options).encode()).hexdigest()

    def _record_file(self, name: str) -> Path:
        return self.out / ".manifest" / f"{name}.json"

    def made_here(self, name: str) -> bool:
        """Whether output ``name`` was made by this checkpoint and these options."""
        try:
            record = json.loads(self._record_file(name).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return record.get("sha256") == self.sha256 and record.get("options_key") == self.options_key

    def pending(self, names: Sequence[str], exists: Sequence[bool], overwrite: bool = False) -> list[int]:
        """Indices of the outputs to (re)do: missing, made by another model or options, or all with --overwrite."""
        todo, stale = [], 0
        for i, (name, present) in enumerate(zip(names, exists)):
            if overwrite or not present:
                todo.append(i)
            elif not self.made_here(name):
                todo.append(i)
                stale += 1
        if stale:
            console.log(f"{stale} output(s) in {self.out} were made by another checkpoint or other options:"
                        " redoing them")
        return todo

    def _checkpoint_field(self) -> str | list[str]:
        paths = [str(c.resolve()) for c in self.checkpoints]
        return paths[0] if len(paths) == 1 else paths

    def record(self, name: str) -> None:
        """Note that output ``name`` was just written by this checkpoint and options."""
        write_json(self._record_file(name), {"checkpoint": self._checkpoint_field(), "sha256": self.sha256,
                                             "options_key": self.options_key})
        write_json(self.out / "manifest.json", {"checkpoint": self._checkpoint_field(),
                                                "sha256": self.sha256, "options": self.options})
