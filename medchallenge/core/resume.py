"""``train --resume RUN``: continue a run with its own options, read back from its config.json.

Every ``train`` records all of its options as run (``command_options`` in config.json). A resume
takes them from there, so nothing has to be retyped. An option given again on the command line
with another value is an error listing each difference, except the few that are safe to change
(:data:`SAFE`): they only change how the rest of the run is carried out, not what it trains.
Nothing here imports torch; every check runs before the Trainer touches the run folder, so a
refused resume leaves the run byte-identical.
"""

from __future__ import annotations

import enum
import inspect
import json
import os
from pathlib import Path
from typing import Any

from medchallenge.core.errors import DataError, OptionError

RUNS = Path("runs")

#: Options a resume may change, and what changing them means.
SAFE: dict[str, str] = {
    "epochs": "more epochs only; a cosine or step schedule is rebuilt over the new total, so the learning"
              " rate at the resumed step is the longer schedule's (higher than the old one's) and decays"
              " to the new end",
    "device": "where the rest runs",
    "workers": "loader processes",
    "log_every": "log cadence",
    "checkpoint_every": "save cadence",
    "val_every": "validation cadence",
    "tensorboard": "extra logging",
}


def base_type(annotation: Any) -> Any:
    """The Python type inside ``Annotated[T, typer.Option(...)]`` (Optional[T] → T)."""
    args = getattr(annotation, "__metadata__", None) and annotation.__origin__
    kind = args if args else annotation
    inner = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    return inner[0] if inner else kind


def to_json_value(value: Any) -> Any:
    """An option value as config.json records it: enums by value, paths absolute."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, tuple):
        return [to_json_value(v) for v in value]
    return value


def from_json_value(value: Any, annotation: Any) -> Any:
    """The recorded ``value`` as the parameter's type (an enum member, a Path)."""
    kind = base_type(annotation)
    if value is None or not isinstance(kind, type):
        return value
    if issubclass(kind, enum.Enum):
        return kind(value)
    if issubclass(kind, Path):
        return Path(value)
    return value


def resolve_run(run: str | Path) -> Path:
    """The run folder ``run``; ``latest`` means the folder ``runs/latest`` points at."""
    path = Path(run)
    if str(run) == "latest":
        path = RUNS / "latest"
        if path.is_symlink():
            path = path.parent / os.readlink(path)
    return path


def read_run_options(run: Path) -> dict[str, Any]:
    """The options a run was started with (its config.json's ``command_options``)."""
    config_path = run / "config.json"
    if not run.is_dir():
        raise DataError(run, "not a run folder (--resume takes a folder written by train, or latest)")
    if not (run / "last.pt").is_file():
        raise DataError(run / "last.pt", "not found: nothing to resume")
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise DataError(config_path, "not found: not a run folder written by train") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(config_path, f"unreadable ({err})") from None
    recorded = config.get("command_options") if isinstance(config, dict) else None
    if not isinstance(recorded, dict):
        raise DataError(config_path, "records no command options (an older version wrote it):"
                                     " resume it with that version, or start a new run")
    return recorded


def restore_run_options(kwargs: dict[str, Any], signature: inspect.Signature,
                        given: set[str] | None = None) -> dict[str, Any]:
    """``kwargs`` of a ``train --resume RUN`` call with the run's recorded options put back.

    Args:
        kwargs: the parsed options of this call (``kwargs["resume"]`` is the run).
        signature: the command's signature (types to rebuild enums and paths).
        given: options typed on this command line (default: from the click context, or those
            that differ from their defaults when called without one).

    Raises:
        OptionError: an option given with a value other than the run's (listing each), unless safe.
        DataError: the run folder, its last.pt or its config.json is missing or unreadable.
    """
    run = resolve_run(kwargs["resume"])
    recorded = read_run_options(run)
    given = _given(kwargs, signature) if given is None else given
    restored = dict(kwargs)
    changed: list[str] = []
    safe: list[tuple[str, Any, Any]] = []
    for name, param in signature.parameters.items():
        if name == "resume" or name not in recorded:
            continue  # an option newer than the run keeps what this call says
        if name == "out":
            if name in given and kwargs[name] is not None and Path(kwargs[name]).resolve() != run.resolve():
                changed.append(f"--out {kwargs[name]} (the run is {run})")
            restored[name] = run
            continue
        value = to_json_value(kwargs[name])
        if name in given and value != recorded[name]:
            if name in SAFE and not (name == "epochs" and value < recorded[name]):
                safe.append((name, value, recorded[name]))
                continue
            changed.append(f"{_flag(name)} {value} (run: {recorded[name]})")
            continue
        restored[name] = from_json_value(recorded[name], param.annotation)
    if changed:
        raise OptionError(f"--resume {run}: {', '.join(changed)}; a resume continues with the run's own options"
                          " (leave these out, or start a new run)")
    for name, value, was in safe:
        _announce(name, value, was)
    return restored


def _given(kwargs: dict[str, Any], signature: inspect.Signature) -> set[str]:
    try:  # typer before 0.20 runs on click; later versions carry their own copy of it
        from click.core import ParameterSource
        from click.globals import get_current_context
    except ImportError:
        from typer._click.core import ParameterSource  # type: ignore[no-redef]
        from typer._click.globals import get_current_context  # type: ignore[no-redef]

    ctx = get_current_context(silent=True)
    if ctx is not None:
        typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        return {name for name in kwargs if ctx.get_parameter_source(name) in typed}
    return {name for name, value in kwargs.items()
            if name in signature.parameters and value != signature.parameters[name].default}


def _announce(name: str, value: Any, was: Any) -> None:
    from medchallenge.core import console

    console.log(f"resume: {_flag(name)} {value} instead of the run's {was} ({SAFE[name]})")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
