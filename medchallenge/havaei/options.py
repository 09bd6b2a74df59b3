"""Typer option types both ``brats train`` and ``lits train`` take (the Havaei model and its schedule).

Only types live here (no Typer app): each challenge's cli.py composes them, so ``lits`` never
imports ``brats`` to share an option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from medchallenge.core.cliflags import Optimizer, Scheduler, choices

DATA, MODEL = "Data", "Model"


Architecture = choices("Architecture", "twopath", "inputcascade")


CacheOpt = Annotated[Path, typer.Option("--cache", help="Patch cache from `tile`.", rich_help_panel=DATA)]
ModelOpt = Annotated[Architecture, typer.Option("--model", help="Architecture.", rich_help_panel=MODEL)]
PhaseOpt = Annotated[int, typer.Option("--phase", min=1, max=2, rich_help_panel=MODEL,
                                       help="1: equiprobable labels; 2: natural, only the output layer trains.")]
PatchesOpt = Annotated[int, typer.Option("--patches-per-epoch", min=1, help="Random patches per epoch.",
                                         rich_help_panel=DATA)]
ValMaxOpt = Annotated[int, typer.Option("--val-max-cases", min=1, rich_help_panel=DATA,
                                        help="Validation cases segmented whole each validation (bounds its cost).")]
MomentumStartOpt = Annotated[float, typer.Option("--momentum-start", help="SGD momentum at the first epoch.",
                                                 rich_help_panel="Optimisation")]
MomentumEndOpt = Annotated[float, typer.Option("--momentum-end", help="SGD momentum at the last epoch.",
                                               rich_help_panel="Optimisation")]
LrDecayOpt = Annotated[float, typer.Option("--lr-decay", help="Learning-rate factor per epoch.",
                                           rich_help_panel="Optimisation")]
DropoutOpt = Annotated[float, typer.Option("--dropout", min=0.0, max=1.0, help="Dropout before the output layer.",
                                           rich_help_panel=MODEL)]
L1Opt = Annotated[float, typer.Option("--l1", min=0.0, help="L1 penalty on the weights.",
                                      rich_help_panel="Optimisation")]
RunOutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<model>-phase<N>-<time>).",
                                                   rich_help_panel="Run")]

SCHEDULE_REASON = ("the Havaei training runs the report's SGD with a momentum ramp (--momentum-start/--momentum-end)"
                   " and exponential decay (--lr-decay)")
UNSUPPORTED = {"optimizer": SCHEDULE_REASON, "scheduler": SCHEDULE_REASON, "warmup_epochs": SCHEDULE_REASON}
ENGINE_DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 128, "lr": 0.005, "weight_decay": 1e-4,
                                   "grad_clip": 1.0, "workers": 2,
                                   "optimizer": Optimizer.sgd, "scheduler": Scheduler.none}
