"""``medchallenge kits``: sample, tile, train, predict, evaluate for KiTS19 kidney-tumour segmentation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core.jsonio import dumps_json
from medchallenge.core.options import (
    AccumulateOpt,
    AmpOpt,
    BatchSizeOpt,
    ChannelsLastOpt,
    CheckpointOpt,
    CompileOpt,
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
    TensorboardOpt,
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("KiTS19 kidney and kidney-tumour segmentation in CT (metric: kidney and tumour Dice).")

CasesOpt = Annotated[Optional[str], typer.Option("--cases", help="Case numbers, e.g. 0-19,25 (default: all).")]
SlicesOpt = Annotated[Path, typer.Option("--slices", help="Slice cache written by `kits tile`.")]


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("kits-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Cases (train + test).")] = 12,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 96,
    seed: SeedOpt = 0,
) -> None:
    """Write synthetic CT cases in the KiTS19 layout (data/case_XXXXX, answers/ for the test cases).

    Example: medchallenge kits sample --out kits-sample --n-cases 12
    """
    from medchallenge.core.console import log
    from medchallenge.kits.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_cases=n_cases, size=size, seed=seed)
    log(f"wrote {counts['train']} training and {counts['test']} test case(s) to {out / 'data'}")


@app.command()
@report_errors
def tile(
    data: DataOpt = Path("."),
    out: OutOpt = None,
    cases: CasesOpt = None,
    window: Annotated[str, typer.Option("--window", help="HU window LOW,HIGH.")] = "-79,304",
    mean: Annotated[float, typer.Option("--mean", help="Normalisation mean (HU).")] = 101.0,
    std: Annotated[float, typer.Option("--std", help="Normalisation std (HU).")] = 76.9,
    workers: WorkersOpt = 0,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cache normalised axial slices and a slice index (default ./slices).

    Example: medchallenge kits tile --cases 0-19 --window -79,304
    """
    from medchallenge.core.parts import parse_case_range
    from medchallenge.kits.slices import parse_window, tile_cases

    tile_cases(data, out or Path("slices"), parse_case_range(cases), parse_window(window), mean, std,
               workers=workers, part=part, overwrite=overwrite)


@app.command()
@report_errors
def train(
    slices: SlicesOpt = Path("slices"),
    out: OutOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchSizeOpt = 4,
    lr: LrOpt = 0.002,
    depth: Annotated[int, typer.Option("--depth", min=1, max=6, help="U-Net poolings.")] = 4,
    width: Annotated[int, typer.Option("--width", min=1, help="Channels of the first block.")] = 32,
    batch_norm: Annotated[bool, typer.Option("--batch-norm/--no-batch-norm", help="Batch norm (the report: off).")] = False,
    loss: Annotated[str, typer.Option("--loss", help="ce or ce-dice.")] = "ce",
    oversample: Annotated[float, typer.Option("--oversample", min=0.0, max=1.0, help="Share of slices drawn from kidney/tumour slices.")] = 0.0,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Training crop (px); multiple of 2**depth.")] = 512,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of cases for validation.")] = 0.2,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 2,
    seed: SeedOpt = 0,
    amp: AmpOpt = True,
    channels_last: ChannelsLastOpt = False,
    compile: CompileOpt = False,
    accumulate: AccumulateOpt = 1,
    resume: ResumeOpt = False,
    tensorboard: TensorboardOpt = False,
) -> None:
    """Train the 2D U-Net; best.pt by mean kidney/tumour Dice on validation cases (writes ./runs/unet-<time>).

    Example: medchallenge kits train --epochs 1 --batch-size 4 --lr 0.002
    """
    from medchallenge.core.engine import TrainConfig
    from medchallenge.kits.train import KitsOptions, KitsTrainer

    out = out or Path("runs") / f"unet-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(out=out, epochs=epochs, batch_size=batch_size, lr=lr, scheduler="none", device=device,
                         workers=workers, seed=seed, amp=amp, channels_last=channels_last, compile=compile,
                         accumulate=accumulate, resume=resume, tensorboard=tensorboard)
    options = KitsOptions(slices=slices, depth=depth, width=width, batch_norm=batch_norm, loss=loss,
                          oversample=oversample, patch_size=patch_size, val_fraction=val_fraction)
    result = KitsTrainer(config, options).fit()
    typer.echo(f"best validation composite Dice {result['best']['composite_dice']}: {out / 'best.pt'}", err=True)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for prediction_XXXXX.nii.gz.")] = Path("predictions"),
    cases: CasesOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment whole volumes into prediction_XXXXX.nii.gz (uint8 {0,1,2}, the input's grid).

    Example: medchallenge kits predict --checkpoint runs/unet-*/best.pt --data . --out predictions --cases 210-299
    """
    from medchallenge.core.parts import parse_case_range
    from medchallenge.kits.predict import predict_cases

    predict_cases(checkpoint, data, out, parse_case_range(cases), device, batch_size, part, overwrite)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="KiTS data folder or a folder of case_XXXXX.nii.gz labels.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of prediction_XXXXX.nii.gz.")] = Path("predictions"),
    cases: CasesOpt = None,
    out: OutOpt = None,
    plots: Annotated[bool, typer.Option("--plots", help="Overlays of the slices with the most tumour.")] = False,
    data: Annotated[Path, typer.Option("--data", help="KiTS folder whose imaging the --plots overlays show.")] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Kidney Dice (label>0), tumour Dice (label>1), their mean and pixel accuracy per case and on average.

    Example: medchallenge kits evaluate --predictions predictions --truth answers --json --plots
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.parts import parse_case_range
    from medchallenge.kits.evaluate import evaluate_folder, plot_overlays, write_report

    summary, scores = evaluate_folder(predictions, truth, parse_case_range(cases))
    out = out or predictions / "evaluation"
    write_report(out, summary, scores)
    if plots:
        plot_overlays(predictions, truth, scores, out, data=data)
    if as_json:
        typer.echo(dumps_json(summary))
        return
    from rich.table import Table

    table = Table(title=f"KiTS19: {predictions} vs {truth}")
    for column in ("case", "kidney Dice", "tumour Dice", "composite", "pixel acc."):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in summary["cases"]:
        table.add_row(row["case"], *(f"{row[k]:.4f}" for k in ("kidney_dice", "tumor_dice", "composite_dice",
                                                               "pixel_accuracy")))
    table.add_row("[bold]mean", *(f"[bold]{summary[k]:.4f}" for k in ("kidney_dice", "tumor_dice", "composite_dice",
                                                                      "pixel_accuracy")))
    out_console.print(table)
    out_console.print(f"metrics.json and cases.csv in {out}")
