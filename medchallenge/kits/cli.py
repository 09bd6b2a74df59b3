"""``medchallenge kits``: sample, tile, train, predict, evaluate for KiTS19 kidney-tumour segmentation.

Options only: every heavy import (torch, SimpleITK, the kits modules) happens inside a command, so
``--help`` and a bad choice (exit 2) never load torch.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, Scheduler, choices, deprecated_aliases, engine_flags

app = opt.challenge_app("KiTS19 kidney and kidney-tumour segmentation in CT (metric: kidney and tumour Dice).")

DATA, MODEL = "Data", "Model"


Model = choices("Model", "unet")


Loss = choices("Loss", "ce", "dice-ce", "ce-dice")  # deprecated spelling of dice-ce, accepted one release with a warning


CasesOpt = Annotated[Optional[str], typer.Option("--cases", help="Case numbers, e.g. 0-19,25 (default: all).")]
CacheOpt = Annotated[Path, typer.Option("--cache", help="Slice cache written by `kits tile`.", rich_help_panel=DATA)]


@app.command()
@opt.report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("kits-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Cases (train + test).")] = 12,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 96,
    seed: opt.SeedOpt = 0,
) -> None:
    """Write synthetic CT cases in the KiTS19 layout (data/case_XXXXX, answers/ for the test cases).

    Example: medchallenge kits sample --out kits-sample --n-cases 12
    """
    from medchallenge.core.console import log
    from medchallenge.kits.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_cases=n_cases, size=size, seed=seed)
    log(f"wrote {counts['train']} training and {counts['test']} test case(s) to {out / 'data'}")


@app.command()
@opt.report_errors
def check(
    data: opt.DataOpt = Path("."),
    as_json: opt.JsonOpt = False,
    workers: opt.WorkersOpt = 0,
) -> None:
    """Check a KiTS19 folder before `tile`: layout, headers, grids and label values; exit 2 if tile would stop.

    Example: medchallenge kits check --data /data/kits19 --workers 4
    """
    from medchallenge.core.check import emit
    from medchallenge.kits.check import check_dataset

    emit(check_dataset(data, workers), as_json)


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache"})
def tile(
    data: opt.DataOpt = Path("."),
    cache: Annotated[Path, typer.Option("--cache", help="Folder to write the slice cache into.")] = Path("slices"),
    cases: CasesOpt = None,
    window: Annotated[str, typer.Option("--window", help="HU window LOW,HIGH.")] = "-79,304",
    mean: Annotated[float, typer.Option("--mean", help="Normalisation mean (HU).")] = 101.0,
    std: Annotated[float, typer.Option("--std", help="Normalisation std (HU).")] = 76.9,
    workers: opt.WorkersOpt = 0,
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Cache normalised axial slices and a slice index (default ./slices).

    Example: medchallenge kits tile --cases 0-19 --window -79,304
    """
    from medchallenge.core.parts import parse_case_range
    from medchallenge.kits.slices import parse_window, tile_cases

    tile_cases(data, cache, parse_case_range(cases), parse_window(window), mean, std,
               workers=workers, part=part, overwrite=overwrite)


@app.command()
@opt.report_errors
@deprecated_aliases({"--slices": "cache"})
@engine_flags(epochs=1, batch_size=4, lr=0.002, scheduler=Scheduler.none, workers=2)
def train(
    cache: CacheOpt = Path("slices"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/unet[-fold<K>]-<time>-<id>).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of cases for validation.",
                                                rich_help_panel=DATA)] = 0.2,
    patch_size: Annotated[Optional[int], typer.Option(
        "--patch-size", rich_help_panel=DATA, show_default=False,
        help="Training crop (px), a multiple of 2**depth [default: 512, or the cached slices' size when smaller].")] = None,
    oversample: Annotated[float, typer.Option("--oversample", min=0.0, max=1.0, rich_help_panel=DATA,
                                              help="Share of slices drawn from kidney/tumour slices (nnU-Net's"
                                                   " 0.33; the report: 0).")] = 0.33,
    mirror: opt.MirrorOpt = True,
    model: Annotated[Model, typer.Option("--model", help="Architecture.", rich_help_panel=MODEL)] = Model.unet,
    depth: Annotated[int, typer.Option("--depth", min=1, max=6, help="U-Net poolings.", rich_help_panel=MODEL)] = 4,
    width: Annotated[int, typer.Option("--width", min=1, help="Channels of the first block.",
                                       rich_help_panel=MODEL)] = 32,
    batch_norm: Annotated[bool, typer.Option("--batch-norm/--no-batch-norm", help="Batch norm (the report: off).",
                                             rich_help_panel=MODEL)] = False,
    loss: Annotated[Loss, typer.Option("--loss", help="Loss (the report: ce; ce-dice: deprecated name of dice-ce).",
                                       rich_help_panel=MODEL)] = Loss.dice_ce,
    *,
    engine: EngineFlags,
) -> None:
    """Train the 2D U-Net; best.pt by mean kidney/tumour Dice on validation cases (writes ./runs/unet-<time>).

    Example: medchallenge kits train --epochs 1 --batch-size 4 --lr 0.002
    """
    if loss is Loss.ce_dice:
        typer.echo("warning: --loss ce-dice is deprecated and will be removed; use --loss dice-ce", err=True)
        loss = Loss.dice_ce
    from medchallenge.kits.train import KitsOptions, KitsTrainer

    out = out or engine.run_dir(model.value)
    options = KitsOptions(cache=cache, depth=depth, width=width, batch_norm=batch_norm, loss=loss.value,
                          oversample=oversample, patch_size=patch_size, val_fraction=val_fraction, mirror=mirror)
    KitsTrainer(engine.config(out), options).fit()


@app.command()
@opt.report_errors
def predict(
    checkpoint: opt.CheckpointsOpt,
    data: opt.DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for prediction_XXXXX.nii.gz.")] = Path("predictions"),
    cases: CasesOpt = None,
    tta: opt.TtaOpt = False,  # mirroring: each slice as is, flipped left-right, up-down and both (4× the compute)
    batch_size: opt.BatchSizeOpt = 8,
    device: opt.DeviceOpt = "auto",
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Segment whole volumes into prediction_XXXXX.nii.gz (uint8 {0,1,2}, the input's grid).

    Several --checkpoint (or a cv folder) average their softmax (an ensemble).

    Example: medchallenge kits predict --checkpoint runs/latest --data . --out predictions --cases 210-299 --tta
    """
    from medchallenge.core.parts import parse_case_range
    from medchallenge.kits.predict import predict_cases

    predict_cases(checkpoint, data, out, parse_case_range(cases), device, batch_size, part, overwrite, tta=tta)


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or runs/<glob>).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and oof.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with the challenge's metric.

    Example: medchallenge kits cv runs/unet-fold* --out cv
    """
    from medchallenge.core.cv import run_cv
    from medchallenge.kits.metrics import cv_score

    run_cv(runs, "kits", cv_score, out, as_json)


@app.command()
@opt.report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="KiTS data folder or a folder of case_XXXXX.nii.gz labels.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of prediction_XXXXX.nii.gz.")] = Path("predictions"),
    cases: CasesOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv and plots.")] = Path("evaluation"),
    plots: Annotated[bool, typer.Option("--plots", help="Overlays of the slices with the most tumour.")] = False,
    data: Annotated[Path, typer.Option("--data", help="KiTS folder whose imaging the --plots overlays show.")] = Path("."),
    as_json: opt.JsonOpt = False,
) -> None:
    """Kidney Dice (label>0), tumour Dice (label>1), their mean and pixel accuracy per case and on average.

    Example: medchallenge kits evaluate --predictions predictions --truth answers --json --plots
    """
    from medchallenge.core.jsonio import dumps_json
    from medchallenge.core.parts import parse_case_range
    from medchallenge.core.report import write_report
    from medchallenge.kits.evaluate import evaluate_folder, evaluation_report, plot_overlays

    summary, scores = evaluate_folder(predictions, truth, parse_case_range(cases))
    draw = (lambda folder: plot_overlays(predictions, truth, scores, folder, data=data)) if plots else None
    report = evaluation_report(summary, scores, draw)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    _print_table(summary, f"KiTS19: {predictions} vs {truth}", out)


def _print_table(summary: dict, title: str, out: Path) -> None:
    from rich.table import Table

    from medchallenge.core.console import out_console

    keys = ("kidney_dice", "tumor_dice", "composite_dice", "pixel_accuracy")
    table = Table(title=title)
    for column in ("case", "kidney Dice", "tumour Dice", "composite", "pixel acc."):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in summary["cases"]:
        table.add_row(row["case"], *(f"{row[k]:.4f}" for k in keys))
    table.add_row("[bold]mean", *(f"[bold]{summary[k]:.4f}" for k in keys))
    out_console.print(table)
    out_console.print(f"metrics.json and cases.csv in {out}")
