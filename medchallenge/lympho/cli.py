"""``medchallenge lympho``: sample, tile, train, predict, evaluate for lymphocytosis diagnosis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core.jsonio import dumps_json
from medchallenge.core.options import (
    AccumulateOpt,
    AmpOpt,
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
    WeightsOpt,
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("Lymphocytosis: reactive vs malignant per patient, multi-instance (metric: balanced accuracy).")


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("lympho-sample"),
    n_patients: Annotated[int, typer.Option("--n-patients", min=8, help="Patients (train + test).")] = 32,
    min_images: Annotated[int, typer.Option("--min-images", min=1, help="Fewest images per patient.")] = 8,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Most images per patient.")] = 24,
    seed: SeedOpt = 0,
) -> None:
    """Write a synthetic dataset in the real layout (+ answers/test_labels.csv).

    Example: medchallenge lympho sample --out lympho-sample --n-patients 32
    """
    from medchallenge.core.console import log
    from medchallenge.lympho.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_patients, seed, min_images, max_images)
    log(f"wrote {counts['train']} training and {counts['test']} test patient(s) to {out}")


@app.command()
@report_errors
def tile(
    data: DataOpt = Path("."),
    out: OutOpt = None,
    crop: Annotated[int, typer.Option("--crop", min=8, help="Centre crop, px (the report: 112).")] = 112,
    workers: WorkersOpt = 0,
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Decode and centre-crop every patient's images into a cache (default ./cache).

    Example: medchallenge lympho tile --crop 112
    """
    from medchallenge.lympho.cache import build_cache

    build_cache(data, out or Path("cache"), crop, workers, part, overwrite)


@app.command()
@report_errors
def train(
    cache: Annotated[Path, typer.Option("--cache", help="Cache written by `lympho tile`.")] = Path("cache"),
    out: OutOpt = None,
    model: Annotated[str, typer.Option("--model", help="mean, attention, clinical, sum-of-losses or moe.")] = "mean",
    clinical_features: Annotated[str, typer.Option("--clinical-features", help="From age,count,birth_month,birth_year.")] = "age,count",
    epochs: EpochsOpt = 20,
    lr: LrOpt = 1e-4,
    loss: Annotated[str, typer.Option("--loss", help="bce or dice (the report's soft Dice).")] = "bce",
    class_weight: Annotated[bool, typer.Option("--class-weight", help="Weight BCE for the label imbalance.")] = False,
    scheduler: Annotated[str, typer.Option("--scheduler", help="none, step (×0.1 every 10 epochs) or cosine.")] = "none",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of patients for validation.")] = 0.5,
    n_folds: Annotated[Optional[int], typer.Option("--n-folds", help="Stratified k-fold instead.")] = None,
    fold: Annotated[int, typer.Option("--fold", help="Validation fold with --n-folds.")] = 0,
    max_batch_images: Annotated[int, typer.Option("--max-batch-images", help="Images per batch (patients packed).")] = 256,
    max_images: Annotated[Optional[int], typer.Option("--max-images", min=1, help="Subsample bigger bags (logged).")] = None,
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
    """Train a patient-level model; best.pt by validation balanced accuracy (writes ./runs/<model>-<time>).

    Example: medchallenge lympho train --model mean --epochs 20 --lr 1e-4
    """
    from medchallenge.core.engine import TrainConfig
    from medchallenge.lympho.train import LymphoOptions, LymphoTrainer

    out = out or Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(out=out, epochs=epochs, batch_size=1, lr=lr, scheduler=scheduler, step_size=10, gamma=0.1,
                         device=device, workers=workers, seed=seed, amp=amp, channels_last=channels_last,
                         compile=compile, accumulate=accumulate, resume=resume, tensorboard=tensorboard)
    options = LymphoOptions(cache=cache, model=model, pretrained=pretrained, weights=weights,
                            clinical_features=[f.strip() for f in clinical_features.split(",") if f.strip()],
                            loss=loss, class_weight=class_weight, val_fraction=val_fraction, n_folds=n_folds,
                            fold=fold, max_batch_images=max_batch_images, max_images=max_images)
    result = LymphoTrainer(config, options).fit()
    typer.echo(f"best validation balanced accuracy {result['best']['balanced_accuracy']}: {out / 'best.pt'}", err=True)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Submission CSV.")] = Path("submission.csv"),
    scores: Annotated[bool, typer.Option("--scores", help="Add a Score column (probability of malignant).")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Write Id,Predicted (0/1) for every test patient, in the CSV's order.

    Example: medchallenge lympho predict --checkpoint runs/mean-*/best.pt --out submission.csv
    """
    from medchallenge.lympho.predict import predict_submission

    predict_submission(checkpoint, data, out, device, with_scores=scores)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV in the clinical_annotation format with labels 0/1.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Submission (Id,Predicted[,Score]).")] = Path("submission.csv"),
    as_json: JsonOpt = False,
) -> None:
    """Balanced accuracy, per-class recall, confusion matrix, ROC AUC when scores are given.

    Example: medchallenge lympho evaluate --predictions submission.csv --truth answers/test_labels.csv --json
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.io import write_json
    from medchallenge.lympho.metrics import evaluate_submission

    result = evaluate_submission(predictions, truth)
    write_json(predictions.parent / "evaluation" / "metrics.json", result)
    if as_json:
        typer.echo(dumps_json(result))
        return
    from rich.table import Table

    table = Table(title=f"Lymphocytosis: {predictions} vs {truth}")
    for key in ("balanced_accuracy", "accuracy", "recall_reactive", "recall_malignant", "roc_auc", "n"):
        if key in result:
            value = result[key]
            shown = ("undefined" if value != value else f"{value:.4f}") if isinstance(value, float) else str(value)
            table.add_row(key, shown)  # NaN (a recall of a class absent from the truth) is undefined
    out_console.print(table)
    cm = result["confusion_matrix"]
    out_console.print(f"confusion matrix (rows truth reactive/malignant, columns prediction): {cm}")
