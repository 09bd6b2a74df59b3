"""``medchallenge lits``: sample, tile, train (transfer from brats), predict, evaluate (liver/tumour Dice)."""


from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, choices, deprecated_aliases, engine_flags
from medchallenge.core.jsonio import dumps_json
from medchallenge.havaei import options as hv

app = opt.challenge_app("LiTS liver-tumour CT segmentation by transfer from brats (liver and tumour Dice).")

DataOpt = Annotated[Path, typer.Option("--data", help="Folder of volume-N.nii (and segmentation-N.nii).",
                                       rich_help_panel=hv.DATA)]


Transfer = choices("Transfer", "local", "global", "both", "e2e", "none")


@app.command()
@opt.report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("lits-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Volumes (train + test).")] = 8,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 48,
    n_slices: Annotated[int, typer.Option("--n-slices", min=1, help="Axial slices.")] = 8,
    seed: opt.SeedOpt = 0,
) -> None:
    """Write synthetic volume-N.nii / segmentation-N.nii / test-volume-N.nii (+ answers/).

    Example: medchallenge lits sample --out lits-sample --n-cases 8
    """
    from medchallenge.core.console import log
    from medchallenge.lits.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_cases, size, n_slices, seed=seed)
    log(f"wrote {counts['train']} training and {counts['test']} test volume(s) to {out}")


@app.command()
@opt.report_errors
def check(data: DataOpt = Path("."), as_json: opt.JsonOpt = False, workers: opt.WorkersOpt = 0) -> None:
    """Check the layout, headers and label values before `tile` (exit 2 when tile would stop).

    Reads CT headers only (size, spacing, direction, voxel type) and the segmentations' labels.
    Example: medchallenge lits check --data . --json
    """
    from medchallenge.core.check import emit
    from medchallenge.lits.check import check_lits

    emit(check_lits(data, workers), as_json)


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache"})
def tile(data: DataOpt = Path("."), cache: Annotated[Path, typer.Option("--cache", help="Patch cache to write.")]
         = Path("patches"), workers: opt.WorkersOpt = 0, part: opt.PartOpt = None, overwrite: opt.OverwriteOpt = False) -> None:
    """Window and scale HU, index patch centres per label (./patches).

    Example: medchallenge lits tile
    """
    from medchallenge.lits.preprocess import tile_lits

    tile_lits(data, cache, workers, part, overwrite)


@app.command()
@opt.report_errors
@deprecated_aliases({"--l2": "weight_decay"})
@engine_flags(unsupported=hv.UNSUPPORTED, **hv.ENGINE_DEFAULTS)
def train(
    cache: hv.CacheOpt = Path("patches"),
    out: hv.RunOutOpt = None,
    from_checkpoint: Annotated[Optional[Path], typer.Option("--from", rich_help_panel=hv.MODEL,
                                                            help="BraTS (or LiTS) checkpoint to transfer from.")] = None,
    transfer: Annotated[Transfer, typer.Option("--transfer", rich_help_panel=hv.MODEL,
                                               help="What trains after the transfer.")] = Transfer.both,
    model: hv.ModelOpt = hv.Architecture.twopath,
    phase: hv.PhaseOpt = 1,
    patches_per_epoch: hv.PatchesOpt = 10_000,
    val_max_cases: hv.ValMaxOpt = 4,
    momentum_start: hv.MomentumStartOpt = 0.5,
    momentum_end: hv.MomentumEndOpt = 0.9,
    lr_decay: hv.LrDecayOpt = 0.9,
    dropout: hv.DropoutOpt = 0.2,
    l1: hv.L1Opt = 1e-6,
    mirror: opt.MirrorOpt = True,
    *,
    engine: EngineFlags,
) -> None:
    """Train on liver CT patches, transferring a BraTS model (--from BRATS_RUN/best.pt --transfer ...).

    Example: medchallenge lits train --from ../brats/runs/twopath-phase2-*/best.pt --transfer both
    """
    from medchallenge.lits.train import LitsOptions, LitsTrainer

    out = out or engine.run_dir(f"{model.value}-phase{phase}")  # the fold in the name with --n-folds
    options = LitsOptions(cache, model.value, phase, from_checkpoint, patches_per_epoch, dropout, 2, l1,
                          momentum_start, momentum_end, lr_decay, val_max_cases=val_max_cases,
                          mirror=mirror, transfer=transfer.value)
    LitsTrainer(engine.config(out), options).fit()


@app.command()
@opt.report_errors
def predict(
    checkpoint: opt.CheckpointsOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for test-segmentation-N.nii (and segmentation-N.nii with --all).")] = Path("predictions"),
    all_volumes: Annotated[bool, typer.Option("--all", help="Also the training volumes (default: test volumes).")] = False,
    batch_size: opt.BatchSizeOpt = 8,
    device: opt.DeviceOpt = "auto",
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
    tta: opt.TtaOpt = False,
) -> None:
    """Segment test-volume-N.nii into test-segmentation-N.nii (--all: also volume-N.nii → segmentation-N.nii).

    Several --checkpoint (files, run folders, a cv folder) average their softmax; --tta adds the
    three mirrored copies of every slice (4× the passes).
    Example: medchallenge lits predict --checkpoint runs/latest --out predictions
    """
    from medchallenge.lits.predict import predict_lits

    predict_lits(checkpoint, data, out, device, batch_size, part, overwrite, test_only=not all_volumes, tta=tta)


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or runs/<glob>).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and oof.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with the challenge's metric.

    Tumour Dice per case first (LiTS's ranking number), then liver per case and both global Dice,
    pooled over the validation volumes of every fold as the official program pools test volumes.
    Example: medchallenge lits cv runs/twopath-phase1-fold*
    """
    from medchallenge.core.cv import run_cv
    from medchallenge.lits.metrics import cv_score

    run_cv(runs, "lits", cv_score, out, as_json)


@app.command()
@opt.report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="Folder of (test-)segmentation-N.nii ground truth.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of (test-)segmentation-N.nii, one per truth file.")] = Path("predictions"),
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv and plots.")] = Path("evaluation"),
    as_json: opt.JsonOpt = False,
) -> None:
    """Liver and tumour Dice, per case (mean) and global, as the official LiTS scoring program.

    Writes metrics.json, cases.csv and dice_per_case.png into --out (default ./evaluation).
    Example: medchallenge lits evaluate --predictions predictions --truth answers --json
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.report import write_report
    from medchallenge.lits.predict import evaluate_lits

    report = evaluate_lits(predictions, truth)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    from rich.table import Table

    table = Table(title=f"LiTS: {predictions} vs {truth}")
    for column in ("", "per case", "global"):
        table.add_column(column)
    for organ in ("liver", "tumor"):
        table.add_row(organ, *(_shown(report.summary[f"{organ}_dice_{kind}"]) for kind in ("per_case", "global")))
    out_console.print(table)


def _shown(value: float) -> str:
    """A score for the table; undefined (NaN) says so."""
    return "undefined" if value != value else f"{value:.4f}"
