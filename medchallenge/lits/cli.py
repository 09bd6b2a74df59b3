"""``medchallenge lits``: sample, tile, train (transfer from brats), predict, evaluate (liver/tumour Dice)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medchallenge.brats.cli import (
    ClipOpt,
    DropoutOpt,
    FromOpt,
    L1Opt,
    L2Opt,
    LrDecayOpt,
    ModelOpt,
    MomentumEndOpt,
    MomentumStartOpt,
    PatchesOpt,
    PhaseOpt,
    train_command,
)
from medchallenge.core.jsonio import dumps_json
from medchallenge.core.options import (
    AmpOpt,
    BatchSizeOpt,
    CheckpointOpt,
    DataOpt,
    DeviceOpt,
    EpochsOpt,
    JsonOpt,
    LrOpt,
    OutOpt,
    OverwriteOpt,
    PartOpt,
    ResumeOpt,
    SeedOpt,
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("LiTS liver-tumour CT segmentation by transfer from brats (liver and tumour Dice).")


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("lits-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Volumes (train + test).")] = 8,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 48,
    seed: SeedOpt = 0,
) -> None:
    """Write synthetic volume-N.nii / segmentation-N.nii / test-volume-N.nii (+ answers/).

    Example: medchallenge lits sample --out lits-sample --n-cases 8
    """
    from medchallenge.core.console import log
    from medchallenge.lits.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_cases, size, seed=seed)
    log(f"wrote {counts['train']} training and {counts['test']} test volume(s) to {out}")


@app.command()
@report_errors
def tile(data: DataOpt = Path("."), out: OutOpt = None, workers: WorkersOpt = 0, part: PartOpt = None,
         overwrite: OverwriteOpt = False) -> None:
    """Window and scale HU, index patch centres per label (./patches).

    Example: medchallenge lits tile
    """
    from medchallenge.lits.train import tile_lits

    tile_lits(data, out or Path("patches"), workers, part, overwrite)


@app.command()
@report_errors
def train(
    cache: Annotated[Path, typer.Option("--cache", help="Patch cache from `lits tile`.")] = Path("patches"),
    out: OutOpt = None,
    from_checkpoint: FromOpt = None,
    transfer: Annotated[str, typer.Option("--transfer", help="local, global, both, e2e or none.")] = "both",
    model: ModelOpt = "twopath",
    phase: PhaseOpt = 1,
    epochs: EpochsOpt = 10,
    batch_size: BatchSizeOpt = 128,
    lr: LrOpt = 0.005,
    patches_per_epoch: PatchesOpt = 10_000,
    momentum_start: MomentumStartOpt = 0.5,
    momentum_end: MomentumEndOpt = 0.9,
    lr_decay: LrDecayOpt = 0.9,
    dropout: DropoutOpt = 0.2,
    l1: L1Opt = 1e-6,
    l2: L2Opt = 1e-4,
    grad_clip: ClipOpt = 1.0,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 2,
    seed: SeedOpt = 0,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
) -> None:
    """Train on liver CT patches, transferring a BraTS model (--from BRATS_RUN/best.pt --transfer ...).

    Example: medchallenge lits train --from ../brats/runs/twopath-phase2-*/best.pt --transfer both
    """
    train_command("lits", cache, out, model, phase, from_checkpoint, epochs, batch_size, lr, patches_per_epoch,
                  momentum_start, momentum_end, lr_decay, dropout, l1, l2, grad_clip, device, workers, seed, amp,
                  resume, transfer=transfer)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for test-segmentation-N.nii (and segmentation-N.nii with --all).")] = Path("predictions"),
    all_volumes: Annotated[bool, typer.Option("--all", help="Also the training volumes (default: test volumes).")] = False,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment test-volume-N.nii into test-segmentation-N.nii (--all: also volume-N.nii → segmentation-N.nii).

    Example: medchallenge lits predict --checkpoint runs/twopath-phase1-*/best.pt --out predictions
    """
    from medchallenge.lits.predict import predict_lits

    predict_lits(checkpoint, data, out, device, batch_size, part, overwrite, test_only=not all_volumes)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="Folder of (test-)segmentation-N.nii ground truth.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of (test-)segmentation-N.nii, one per truth file.")] = Path("predictions"),
    as_json: JsonOpt = False,
) -> None:
    """Liver and tumour Dice, per case (mean) and global, as the official LiTS scoring program.

    Example: medchallenge lits evaluate --predictions predictions --truth answers --json
    """
    from medchallenge.core.console import out_console
    from medchallenge.lits.predict import evaluate_lits

    result = evaluate_lits(predictions, truth)
    if as_json:
        typer.echo(dumps_json(result))
        return
    from rich.table import Table

    table = Table(title=f"LiTS: {predictions} vs {truth}")
    for column in ("", "per case", "global"):
        table.add_column(column)
    for organ in ("liver", "tumor"):
        table.add_row(organ, *(_shown(result[f"{organ}_dice_{kind}"]) for kind in ("per_case", "global")))
    out_console.print(table)


def _shown(value: float) -> str:
    """A score for the table; undefined (NaN) says so."""
    return "undefined" if value != value else f"{value:.4f}"
