"""Typer building blocks every challenge's CLI shares: option aliases and error reporting.

Option names mean the same in every challenge (``--data``, ``--out``, ``--checkpoint``,
``--epochs``, ``--batch-size``, ``--lr``, ``--device``, ``--workers``, ``--seed``, ``--json``,
``--part``). Defaults stay in each command's signature. This module imports no torch, so
``medchallenge --help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from medchallenge.core.errors import MedchallengeError

F = TypeVar("F", bound=Callable)


def challenge_app(help_text: str) -> typer.Typer:
    """A challenge's sub-app: help when called bare, plain exceptions (we report our own)."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )


def report_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit code 2 (apply under ``@app.command``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from medchallenge.core.console import setup_logging

        setup_logging()
        try:
            return fn(*args, **kwargs)
        except MedchallengeError as err:
            sys.stderr.write(f"{err.prefix}: {err}\n")
            sys.stderr.flush()
            raise typer.Exit(err.exit_code) from None
        except RuntimeError as err:  # our error raised inside a DataLoader worker arrives wrapped
            line = _worker_error(str(err))
            if line is None:
                raise
            sys.stderr.write(f"error: {line}\n")
            sys.stderr.flush()
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted: finished work is kept; rerun (with --resume for train) to continue\n")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _worker_error(message: str) -> str | None:
    """The ``path: problem`` of a medchallenge error re-raised by a DataLoader worker, else None."""
    if "in DataLoader worker process" not in message:
        return None
    for name in ("DataError", "OptionError", "TrainingError", "MedchallengeError"):
        marker = f"medchallenge.core.errors.{name}: "
        if marker in message:
            return message.rsplit(marker, 1)[1].strip().splitlines()[0]
    return None


DataOpt = Annotated[Path, typer.Option("--data", help="Dataset folder in the challenge's real layout.")]
TilesOpt = Annotated[Path, typer.Option("--tiles", help="Tile cache written by `tile`.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Where to write the output.")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="A best.pt or last.pt written by `train`.")]
CheckpointsOpt = Annotated[
    list[Path],
    typer.Option("--checkpoint", help="A best.pt, a run folder (its best.pt) or a cv folder (its folds);"
                                      " repeat for an ensemble (outputs averaged)."),
]
TtaOpt = Annotated[bool, typer.Option("--tta", help="Test-time augmentation: average mirrored/rotated views.")]
MirrorOpt = Annotated[bool, typer.Option(
    "--mirror/--no-mirror", help="Training augmentation: mirror each patch in H and W, each with probability 0.5"
                                 " (nnU-Net's; what --tta averages over).")]
ThresholdOpt = Annotated[
    str, typer.Option("--threshold", help="auto (tuned on validation, stored in the checkpoint) or a number.")
]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Samples per batch (per GPU).")]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Worker processes for loading/preprocessing.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (splits, sampling, initialisation).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]
PartOpt = Annotated[
    Optional[str], typer.Option("--part", help="K/N: process only part K of N (array jobs); reruns skip finished work.")
]
AmpOpt = Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 where supported, else fp16).")]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last", help="channels_last memory format (faster convs on GPU).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
AccumulateOpt = Annotated[int, typer.Option("--accumulate", min=1, help="Gradient accumulation steps.")]
PretrainedOpt = Annotated[
    bool, typer.Option("--pretrained/--no-pretrained", help="ImageNet weights from the torch hub cache (no download).")
]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Pretrained weights file (instead of the hub cache).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist.")]
TensorboardOpt = Annotated[bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard (optional extra).")]
