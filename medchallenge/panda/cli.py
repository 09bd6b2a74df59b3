"""``medchallenge panda``: sample, tile, train, predict, evaluate for PANDA ISUP grading."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

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
    PretrainedOpt,
    ResumeOpt,
    SeedOpt,
    TensorboardOpt,
    TilesOpt,
    WeightsOpt,
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("PANDA prostate ISUP grading from whole-slide images (metric: quadratic weighted kappa).")

SkipMissingOpt = Annotated[bool, typer.Option("--skip-missing", help="Warn about slides missing on disk instead of failing.")]


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("panda-sample"),
    n_slides: Annotated[int, typer.Option("--n-slides", min=4, help="Number of slides (train + test).")] = 24,
    size: Annotated[int, typer.Option("--size", min=256, help="Level-0 width and height of each slide, px.")] = 2048,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of slides in the test split.")] = 0.25,
    seed: SeedOpt = 0,
) -> None:
    """Write a small synthetic PANDA dataset in the real layout (+ answers/test_labels.csv).

    Example: medchallenge panda sample --out panda-sample --n-slides 24
    """
    from medchallenge.core.console import log
    from medchallenge.panda.sample import write_sample_dataset

    write_sample_dataset(out, n_slides=n_slides, seed=seed, size=size, test_fraction=test_fraction)
    log(f"wrote {n_slides} slides to {out} (test answers in {out / 'answers' / 'test_labels.csv'})")


@app.command()
@report_errors
def tile(
    data: DataOpt = Path("."),
    out: OutOpt = None,
    split: Annotated[str, typer.Option("--split", help="train (train.csv, with masks) or test (test.csv).")] = "train",
    level: Annotated[int, typer.Option("--level", min=0, help="Pyramid level to cut tiles from.")] = 1,
    n_tiles: Annotated[int, typer.Option("--n-tiles", min=1, help="Tiles kept per slide.")] = 36,
    tile_size: Annotated[int, typer.Option("--tile-size", min=8, help="Tile width and height, px.")] = 256,
    mode: Annotated[int, typer.Option("--mode", help="0: grid from the padded corner; 2: shifted by half a tile.")] = 0,
    workers: WorkersOpt = 0,
    part: PartOpt = None,
    skip_missing: SkipMissingOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cut each slide's N most-tissue tiles into a cache (default ./tiles, ./tiles_test for --split test).

    Example: medchallenge panda tile --level 1 --n-tiles 36
    """
    from medchallenge.core.errors import OptionError
    from medchallenge.panda.tiles import tile_slides

    if split not in ("train", "test"):
        raise OptionError(f"--split {split}: expected train or test")
    if mode not in (0, 2):
        raise OptionError(f"--mode {mode}: expected 0 or 2")
    if out is None:
        out = data / ("tiles" if split == "train" else "tiles_test")
    tile_slides(data, out, split=split, level=level, n_tiles=n_tiles, tile_size=tile_size, mode=mode,
                workers=workers, part=part, skip_missing=skip_missing, overwrite=overwrite)


@app.command()
@report_errors
def train(
    tiles: TilesOpt = Path("tiles"),
    out: OutOpt = None,
    arch: Annotated[str, typer.Option("--arch", help="efficientnet-b0..b7, resnet18/34/50, resnext50_32x4d, alexnet, vgg16.")] = "efficientnet-b0",
    label_encoding: Annotated[str, typer.Option("--label-encoding", help="ordinal, class, onehot or tile-vote.")] = "ordinal",
    layout: Annotated[str, typer.Option("--layout", help="mosaic (6×6 grid) or strip (the report's 9216×256).")] = "mosaic",
    epochs: EpochsOpt = 20,
    batch_size: BatchSizeOpt = 2,
    lr: LrOpt = 3e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Adam weight decay.")] = 0.0,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", help="Linear warm-up before the cosine decay.")] = 1.0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of slides for validation.")] = 0.2,
    n_folds: Annotated[Optional[int], typer.Option("--n-folds", help="Use fold --fold of a stratified k-fold split.")] = None,
    fold: Annotated[int, typer.Option("--fold", help="Validation fold (0-based) with --n-folds.")] = 0,
    pretrained: PretrainedOpt = True,
    weights: WeightsOpt = None,
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
    """Train the ISUP classifier on the tile cache; best.pt by validation QWK (writes ./runs/<arch>-<time>).

    Example: medchallenge panda train --arch efficientnet-b0 --epochs 20 --batch-size 2 --lr 3e-4
    """
    from medchallenge.core.engine import TrainConfig
    from medchallenge.panda.train import PandaOptions, PandaTrainer

    if out is None:
        out = Path("runs") / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(
        out=out, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        device=device, workers=workers, seed=seed, amp=amp, channels_last=channels_last, compile=compile,
        accumulate=accumulate, resume=resume, tensorboard=tensorboard,
    )
    options = PandaOptions(tiles=tiles, arch=arch, encoding=label_encoding, layout=layout, pretrained=pretrained,
                           weights=weights, val_fraction=val_fraction, n_folds=n_folds, fold=fold)
    result = PandaTrainer(config, options).fit()
    typer.echo(f"best validation QWK {result['best']['qwk']}: {out / 'best.pt'}", err=True)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    tiles: Annotated[Optional[Path], typer.Option("--tiles", help="Use a test tile cache instead of tiling raw slides.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Submission CSV to write.")] = Path("submission.csv"),
    tta: Annotated[bool, typer.Option("--tta", help="Average mode-0 and mode-2 tilings.")] = False,
    batch_size: BatchSizeOpt = 2,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    skip_missing: SkipMissingOpt = False,
) -> None:
    """Write submission.csv (image_id,isup_grade) for every test.csv slide, tiling raw slides on the fly.

    Example: medchallenge panda predict --checkpoint runs/efficientnet-b0-*/best.pt --data . --out submission.csv --tta
    """
    from medchallenge.panda.predict import predict_submission

    predict_submission(checkpoint, out, data=data, tiles=tiles, tta=tta, device=device, batch_size=batch_size,
                       workers=workers, skip_missing=skip_missing)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV with image_id,isup_grade[,data_provider] (train.csv or an answer key).")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Submission CSV (image_id,isup_grade).")] = Path("submission.csv"),
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quadratic weighted kappa, accuracy, per-provider QWK and the confusion matrix (table, metrics.json, PNG).

    Example: medchallenge panda evaluate --predictions submission.csv --truth answers/test_labels.csv --json
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.io import write_json
    from medchallenge.core.plots import plot_confusion_matrix
    from medchallenge.panda.metrics import N_GRADES, evaluate_submission

    result = evaluate_submission(predictions, truth)
    out = out or predictions.parent / "evaluation"
    write_json(out / "metrics.json", result)
    plot_confusion_matrix(result["confusion_matrix"], [str(g) for g in range(N_GRADES)], out / "confusion_matrix.png",
                          title=f"ISUP grade (QWK {result['qwk']:.3f})")
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"PANDA: {predictions} vs {truth}")
    for column in ("scope", "n", "QWK", "accuracy"):
        table.add_column(column, justify="right" if column != "scope" else "left")
    table.add_row("all", str(result["n"]), f"{result['qwk']:.4f}", f"{result['accuracy']:.4f}")
    for provider, value in result["qwk_by_provider"].items():
        table.add_row(provider, str(result["n_by_provider"][provider]), f"{value:.4f}",
                      f"{result['accuracy_by_provider'][provider]:.4f}")
    out_console.print(table)
    matrix = Table(title="confusion matrix (rows truth, columns prediction)")
    matrix.add_column("ISUP")
    for g in range(N_GRADES):
        matrix.add_column(str(g), justify="right")
    for g, row in enumerate(result["confusion_matrix"]):
        matrix.add_row(str(g), *[str(v) for v in row])
    out_console.print(matrix)
    out_console.print(f"metrics and confusion_matrix.png in {out}")
