"""Checkpoints that carry everything ``predict`` needs, written atomically, loaded safely.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "medchallenge-checkpoint/1", "version": "0.1.0", "challenge": "panda",
     "model": {"name": "classifier", "kwargs": {...}},   # what to build, by name
     "state_dict": {...},                                # weights of the bare model
     "meta": {...},                                      # classes, preprocessing parameters
     "config": {...},                                    # the run's resolved options
     "epoch": 3, "metrics": {...},                       # when it was saved and how it scored
     "train_state": {...}}                               # optimizer/scheduler/scaler: last.pt only
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from medchallenge import __version__
from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path
from medchallenge.core.offload import place_models
from medchallenge.core.runs import resolve_checkpoint

FORMAT = "medchallenge-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": __version__, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | Path,
    challenge: str | None = None,
    models: Iterable[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load and validate a checkpoint.

    Args:
        path: the ``.pt`` file.
        challenge: the challenge key it must belong to (``None``: any).
        models: accepted model names (``None``: any).

    Raises:
        DataError: missing, corrupt, not ours, of another challenge or another model.
    """
    path = resolve_checkpoint(path)  # a run folder means its best.pt
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(path, f"corrupt or unreadable checkpoint ({first[:160]})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(path, "not a medchallenge checkpoint")
    if challenge is not None and payload.get("challenge") != challenge:
        raise DataError(path, f"checkpoint of challenge '{payload.get('challenge')}', expected '{challenge}'")
    if models is not None:
        allowed = sorted(models)
        name = payload.get("model", {}).get("name")
        if name not in allowed:
            raise DataError(path, f"checkpoint of model '{name}', expected one of: {', '.join(allowed)}")
    return payload


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict[str, Any], path: str | Path) -> None:
    """``module.load_state_dict`` that reports an architecture mismatch as a DataError."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise DataError(path, f"weights do not fit the model described in the checkpoint ({detail})") from err


def load_model(
    path: str | Path,
    registry: Any,
    *,
    challenge: str,
    models: Iterable[str] | None = None,
    expect: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a checkpoint describes, rebuilt through ``registry`` with its weights, in eval mode.

    The one way every ``predict`` and every ``--from`` turns a checkpoint into a model.

    Args:
        path: the ``.pt`` file.
        registry: the challenge's :class:`~medchallenge.core.registry.Registry`.
        challenge: the challenge the checkpoint must belong to.
        models: accepted model names (default: every name in the registry).
        expect: spec kwargs that must have these values (e.g. ``{"in_channels": 4}``).

    Returns:
        (model on ``map_location`` in eval mode, the checkpoint dict).

    Raises:
        DataError: anything :func:`load_checkpoint` refuses, a spec kwarg other than expected, a spec
            the registry cannot build, or weights that do not fit the model.
    """
    payload = load_checkpoint(path, challenge=challenge, models=models or registry.names(), map_location=map_location)
    spec = payload["model"]
    kwargs = spec.get("kwargs", {})
    for key, want in (expect or {}).items():
        if kwargs.get(key) != want:
            raise DataError(path, f"model '{spec['name']}' has {key}={kwargs.get(key)!r}, this data needs {want!r}")
    try:
        model = registry.build(spec)
    except (TypeError, ValueError, KeyError) as err:
        raise DataError(path, f"cannot rebuild model '{spec['name']}' from {kwargs} ({err})") from err
    load_state_dict_checked(model, payload["state_dict"], path)
    return model.to(map_location).eval(), payload


def expand_checkpoints(paths: Sequence[str | Path]) -> list[Path]:
    """Checkpoint files from ``--checkpoint`` values: a file; a run folder (its best.pt); a ``cv`` folder
    (the best.pt of each of its fold runs, as its metrics.json lists them)."""
    files: list[Path] = []
    for path in map(Path, paths):
        cv_metrics = path / "metrics.json"
        if path.is_dir() and not (path / "best.pt").exists() and cv_metrics.is_file():
            try:
                runs = json.loads(cv_metrics.read_text()).get("runs")
            except (OSError, json.JSONDecodeError, AttributeError):
                runs = None
            if not runs:
                raise DataError(path, "neither a run folder (no best.pt) nor a cv folder (no runs in metrics.json)")
            files.extend(Path(run) / "best.pt" for run in runs)
        else:
            files.append(resolve_checkpoint(path))
    if not files:
        raise DataError(None, "no --checkpoint given")
    return files


def load_models(
    paths: Sequence[str | Path],
    registry: Any,
    *,
    challenge: str,
    models: Iterable[str] | None = None,
    expect: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    same_meta: Sequence[str] = (),
) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
    """The models of an ensemble (``--checkpoint A --checkpoint B``, run or cv folders), each via :func:`load_model`.

    ``same_meta`` names the checkpoint meta keys (classes, preprocessing, tile size) every member
    must share with the first: an ensemble averages outputs, which only means something when the
    models read the same input the same way and predict the same classes. The models go onto
    ``map_location`` together when their weights fit there, else each only for its own forward
    (:func:`medchallenge.core.offload.place_models`).

    Raises:
        DataError: a checkpoint :func:`load_model` refuses, or one whose ``same_meta`` differs (naming the key).
    """
    files = expand_checkpoints(paths)
    # loaded on the host first: place_models decides whether the members fit on the device together
    loaded = [load_model(f, registry, challenge=challenge, models=models, expect=expect, map_location="cpu")
              for f in files]
    first_meta = loaded[0][1].get("meta", {})
    for path, (_, payload) in zip(files[1:], loaded[1:]):
        meta = payload.get("meta", {})
        for key in same_meta:
            if meta.get(key) != first_meta.get(key):
                raise DataError(path, f"cannot ensemble with {files[0]}: meta '{key}' is {meta.get(key)!r}"
                                      f" there {first_meta.get(key)!r}")
    placed = place_models([model for model, _ in loaded], torch.device(map_location))
    return [(model, payload) for model, (_, payload) in zip(placed, loaded)]
