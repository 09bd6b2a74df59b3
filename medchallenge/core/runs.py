"""Run folders: unique names under ``./runs``, a ``runs/latest`` link, and run folders as checkpoints.

Array jobs start many runs in the same second, so a name is the model, the time to the second,
the fold and the scheduler's job/task ids when set, and a short random suffix. ``runs/latest``
points at the newest run; ``--checkpoint RUN`` (a run folder) means its best.pt.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

RUNS = Path("runs")


def run_name(model: str, fold: int | None = None) -> str:
    """``<model>[-fold<K>]-<YYYYmmdd-HHMMSS>[-j<job>][-t<task>]-<4 hex>``."""
    parts = [model]
    if fold is not None:
        parts.append(f"fold{fold}")
    parts.append(time.strftime("%Y%m%d-%H%M%S"))
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job:
        parts.append(f"j{job}")
    if task:
        parts.append(f"t{task}")
    parts.append(secrets.token_hex(2))
    return "-".join(parts)


def default_run_dir(model: str, fold: int | None = None, root: Path = RUNS) -> Path:
    """A new run folder path (not created) with a unique name."""
    return Path(root) / run_name(model, fold)


def link_latest(run_dir: Path) -> None:
    """Point ``<runs>/latest`` at ``run_dir`` (replaced atomically; skipped where links cannot be made)."""
    run_dir = Path(run_dir)
    link = run_dir.parent / "latest"
    if link.exists() and not link.is_symlink():
        return  # a real file or folder called latest is the user's: never replace it
    tmp = run_dir.parent / f".latest.{os.getpid()}.partial"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # a filesystem without symlinks: the link is a convenience, never a failure
        if tmp.is_symlink():
            tmp.unlink()


def resolve_checkpoint(path: str | Path, name: str = "best.pt") -> Path:
    """A checkpoint file given as itself, or as a run folder (→ its best.pt)."""
    path = Path(path)
    return path / name if path.is_dir() else path
