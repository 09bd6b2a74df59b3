"""The typed options every ``train`` shares, and the record of a run that config.json holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medchallenge.core.errors import OptionError
from medchallenge.core.jsonio import strict_json

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "step", "none")


@dataclass
class TrainConfig:
    """Options every challenge's ``train`` shares; a challenge's own options go to the Trainer."""

    out: Path
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | none
    warmup_epochs: float = 0.0
    step_size: int = 10  # epochs between ×gamma steps (scheduler "step")
    gamma: float = 0.1
    accumulate: int = 1
    grad_clip: float | None = None
    amp: bool = True
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    resume: bool = False
    val_every: int = 1
    checkpoint_every: float | None = None  # minutes between resumable saves inside an epoch
    log_every: float = 30.0  # seconds between plain progress lines (batch jobs)
    tensorboard: bool = False
    n_folds: int | None = None  # cross-validation folds (None: one split by the challenge's val fraction)
    fold: int = 0  # the validation fold with n_folds
    extra: dict[str, Any] = field(default_factory=dict)
    command_options: dict[str, Any] = field(default_factory=dict)  # the train command's options (for --resume)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.validate()

    def validate(self) -> None:
        """Refuse values no run can use, before anything is built."""
        if self.optimizer.lower() not in OPTIMIZERS:
            raise OptionError(f"--optimizer {self.optimizer}: expected one of {', '.join(OPTIMIZERS)}")
        if self.scheduler.lower() not in SCHEDULERS:
            raise OptionError(f"--scheduler {self.scheduler}: expected one of {', '.join(SCHEDULERS)}")
        if self.n_folds is not None and (self.n_folds < 2 or not 0 <= self.fold < self.n_folds):
            raise OptionError(f"--fold {self.fold} --n-folds {self.n_folds}: expected n_folds >= 2 and 0 <= fold < n_folds")
        if self.n_folds is None and self.fold != 0:
            raise OptionError(f"--fold {self.fold} needs --n-folds")
        for name in ("epochs", "batch_size", "accumulate", "val_every", "step_size"):
            if getattr(self, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        return strict_json(data)


def options_record(options: Any) -> dict[str, Any]:
    """A challenge's options (a dataclass, a dict or None) as strict-JSON values for config.json."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    elif not isinstance(options, dict):
        options = dict(vars(options))
    # input paths as absolute paths: a run folder read later, from elsewhere, still says what it read
    options = {k: (v.absolute() if isinstance(v, Path) else v) for k, v in options.items()}
    return strict_json(options)
