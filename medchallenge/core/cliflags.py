"""One definition of the engine flags every ``train`` takes, and hidden deprecated aliases.

``@engine_flags(epochs=1, batch_size=4, lr=2e-3)`` on a Typer command adds the shared flags
(optimisation, hardware, run) to the command's signature with that challenge's defaults, parses
them before torch is imported, and passes them to the command as one :class:`EngineFlags`
argument named ``engine``. ``@deprecated_aliases({"--slices": "cache"})`` keeps an old option name
working for one release as a hidden option that prints a deprecation line. Typer reads a
command's ``inspect.signature``; both decorators rewrite ``__signature__`` and nothing else.
"""

from __future__ import annotations

import enum
import functools
import inspect
import keyword
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from medchallenge.core.errors import OptionError
from medchallenge.core.resume import base_type, restore_run_options, to_json_value

OPTIMISATION, HARDWARE, RUN, DATA = "Optimisation", "Hardware", "Run", "Data"


def choices(name: str, *values: str) -> Any:
    """A str Enum for a Typer choice option (listed in --help, checked before the command runs).

    Member names are the values as identifiers: ``"dice-ce"`` → ``dice_ce``, ``"global"`` → ``global_``.
    """
    members = {}
    for value in values:
        ident = re.sub(r"\W", "_", value)
        members[ident + "_" if keyword.iskeyword(ident) else ident] = value
    return enum.Enum(name, members, type=str)


Optimizer = choices("Optimizer", "adam", "adamw", "sgd")
Scheduler = choices("Scheduler", "cosine", "step", "none")


@dataclass
class EngineFlags:
    """The engine flags as parsed (no torch import): what :class:`~medchallenge.core.engine.TrainConfig` needs."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    scheduler: str
    warmup_epochs: float
    accumulate: int
    grad_clip: Optional[float]
    device: str
    workers: int
    amp: bool
    channels_last: bool
    compile: bool
    seed: int
    val_every: int
    checkpoint_every: Optional[float]
    log_every: float
    resume: bool
    tensorboard: bool
    n_folds: Optional[int] = None
    fold: int = 0
    command_options: dict[str, Any] = field(default_factory=dict)  # every option of the command, as run

    def config(self, out: Path, **fixed: Any) -> Any:
        """The TrainConfig for run folder ``out``; ``fixed`` are values the challenge sets itself."""
        from medchallenge.core.engine import TrainConfig

        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainConfig(out=out, **{**values, **fixed})

    def run_dir(self, model: str) -> Path:
        """The default run folder: ``runs/<model>[-fold<K>]-<time>-...`` (the fold when ``--n-folds`` is set)."""
        from medchallenge.core.runs import default_run_dir

        return default_run_dir(model, self.fold if self.n_folds else None)


def _flag_parameters(defaults: dict[str, Any]) -> list[inspect.Parameter]:
    """The shared flags as keyword parameters with Typer annotations and this challenge's defaults."""
    d = {"epochs": 10, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "optimizer": Optimizer.adam,
         "scheduler": Scheduler.cosine, "warmup_epochs": 0.0, "accumulate": 1, "grad_clip": None, "device": "auto",
         "workers": 2, "amp": True, "channels_last": False, "compile": False, "seed": 0, "val_every": 1,
         "checkpoint_every": None, "log_every": 30.0,
         "resume": None, "tensorboard": False, "n_folds": None, "fold": 0, **defaults}
    spec: list[tuple[str, Any, Any]] = [
        ("epochs", int, typer.Option("--epochs", min=1, help="Training epochs.", rich_help_panel=OPTIMISATION)),
        ("batch_size", int, typer.Option("--batch-size", min=1, help="Samples per batch (per GPU).", rich_help_panel=OPTIMISATION)),
        ("lr", float, typer.Option("--lr", min=0.0, help="Peak learning rate.", rich_help_panel=OPTIMISATION)),
        ("weight_decay", float, typer.Option("--weight-decay", min=0.0, help="Weight decay (L2).", rich_help_panel=OPTIMISATION)),
        ("optimizer", Optimizer, typer.Option("--optimizer", help="Optimizer.", rich_help_panel=OPTIMISATION)),
        ("scheduler", Scheduler, typer.Option("--scheduler", help="Per-step LR schedule after the warm-up.", rich_help_panel=OPTIMISATION)),
        ("warmup_epochs", float, typer.Option("--warmup-epochs", min=0.0, help="Linear LR warm-up (epochs, may be fractional).", rich_help_panel=OPTIMISATION)),
        ("accumulate", int, typer.Option("--accumulate", min=1, help="Gradient accumulation steps (batch b × N acts as b·N).", rich_help_panel=OPTIMISATION)),
        ("grad_clip", Optional[float], typer.Option("--grad-clip", min=0.0, help="Clip the gradient norm to this value.", rich_help_panel=OPTIMISATION)),
        ("device", str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=HARDWARE)),
        ("workers", int, typer.Option("--workers", min=0, help="DataLoader worker processes.", rich_help_panel=HARDWARE)),
        ("amp", bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 where supported, else fp16).", rich_help_panel=HARDWARE)),
        ("channels_last", bool, typer.Option("--channels-last", help="channels_last memory format (faster convs on GPU).", rich_help_panel=HARDWARE)),
        ("compile", bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=HARDWARE)),
        ("seed", int, typer.Option("--seed", help="Random seed (splits, sampling, initialisation).", rich_help_panel=RUN)),
        ("val_every", int, typer.Option("--val-every", min=1, help="Validate every N epochs (and after the last).", rich_help_panel=RUN)),
        ("checkpoint_every", Optional[float], typer.Option("--checkpoint-every", min=0.1, help="Also save a resumable last.pt every N minutes inside an epoch.", rich_help_panel=RUN)),
        ("log_every", float, typer.Option("--log-every", min=0.0, help="Seconds between progress lines in batch logs (no TTY).", rich_help_panel=RUN)),
        ("resume", Optional[str], typer.Option("--resume", metavar="RUN", rich_help_panel=RUN,
                                                help="Continue run folder RUN (or 'latest') with its own options from its last.pt.")),
        ("tensorboard", bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard (optional extra).", rich_help_panel=RUN)),
        ("n_folds", Optional[int], typer.Option("--n-folds", min=2, rich_help_panel=DATA,
                                                help="Cross-validation: split the cases into N folds (grouped, stratified).")),
        ("fold", int, typer.Option("--fold", min=0, rich_help_panel=DATA, help="The validation fold (0-based) with --n-folds.")),
    ]
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d[name], annotation=Annotated[kind, option])
            for name, kind, option in spec]


ENGINE_FLAG_NAMES = tuple(f.name for f in fields(EngineFlags) if f.name != "command_options")


def engine_flags(unsupported: dict[str, str] | None = None, **defaults: Any) -> Callable[[Callable], Callable]:
    """Add the shared engine flags to a ``train`` command; it receives them as ``engine: EngineFlags``.

    Args:
        unsupported: flag name → why this challenge cannot honour it; a non-default value is refused
            with that reason (one line, exit 2) before anything runs.
        defaults: this challenge's defaults (``epochs=1, lr=2e-3``).
    """
    unsupported = unsupported or {}
    extra = _flag_parameters(defaults)
    flag_defaults = {p.name: p.default for p in extra}

    def decorate(fn: Callable) -> Callable:
        sig = _resolved_signature(fn)
        own = [p for name, p in sig.parameters.items() if name != "engine"]
        # a command that declares an engine flag itself keeps its own (it receives it, and so does engine)
        shared = {p.name for p in own} & set(ENGINE_FLAG_NAMES)
        flags = [p for p in extra if p.name not in shared]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("resume"):
                kwargs = restore_run_options(kwargs, wrapper.__signature__)  # type: ignore[attr-defined]
            values = {name: kwargs[name] if name in shared else kwargs.pop(name) for name in ENGINE_FLAG_NAMES}
            for name, why in unsupported.items():
                if values[name] != flag_defaults[name]:
                    raise OptionError(f"--{name.replace('_', '-')} is not supported here: {why}")
            recorded = {**{k: to_json_value(v) for k, v in kwargs.items()},
                        **{k: to_json_value(v) for k, v in values.items() if k != "resume"}}
            values = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}
            values["resume"] = bool(values["resume"])
            return fn(*args, engine=EngineFlags(**values, command_options=recorded), **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + flags)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def deprecated_aliases(aliases: dict[str, str]) -> Callable[[Callable], Callable]:
    """Keep old option names working one release: ``{"--slices": "cache"}`` (old flag → new parameter).

    Each old flag becomes a hidden option; when given, it prints a deprecation line on stderr and
    sets the new parameter (giving both is an error).
    """

    def decorate(fn: Callable) -> Callable:
        sig = _resolved_signature(fn)
        hints = {name: param.annotation for name, param in sig.parameters.items()}
        hidden: list[inspect.Parameter] = []
        names: dict[str, tuple[str, str]] = {}
        for flag, target in aliases.items():
            kind = base_type(hints[target])
            pname = "deprecated_" + flag.lstrip("-").replace("-", "_")
            names[pname] = (flag, target)
            hidden.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[Optional[kind], typer.Option(flag, hidden=True)]))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for pname, (flag, target) in names.items():
                value = kwargs.pop(pname)
                if value is None:
                    continue
                new_flag = _flag_of(hints[target], target)
                if kwargs.get(target) != sig.parameters[target].default:
                    raise OptionError(f"{flag} and {new_flag} both given: {flag} is the old name of {new_flag}")
                sys.stderr.write(f"warning: {flag} is deprecated and will be removed; use {new_flag}\n")
                kwargs[target] = value
            return fn(*args, **kwargs)

        params = list(sig.parameters.values())
        wrapper.__signature__ = sig.replace(parameters=params + hidden)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _resolved_signature(fn: Callable) -> inspect.Signature:
    """``fn``'s signature with its annotations evaluated.

    Under ``from __future__ import annotations`` they are strings; a signature handed to Typer with
    strings loses the ``typer.Option`` inside them (options named after parameters, help gone).
    Parameters a decorator added (already evaluated) are kept as they are.
    """
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    return sig.replace(parameters=[p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items()])


def _flag_of(annotation: Any, name: str) -> str:
    for meta in getattr(annotation, "__metadata__", ()):
        decls = getattr(meta, "param_decls", None)
        if decls:
            return decls[0].split("/")[0]
    return "--" + name.replace("_", "-")
