"""``medchallenge lympho``: sample, tile, train, predict, evaluate for lymphocytosis diagnosis."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, Scheduler, choices, deprecated_aliases, engine_flags

app = opt.challenge_app("Lymphocytosis: reactive vs malignant per patient, multi-instance (metric: balanced accuracy).")
DATA, MODEL = "Data", "Model"


ModelName = choices("ModelName", "mean", "attention", "clinical", "sum-of-losses", "moe")


Loss = choices("Loss", "bce", "dice")


DataOpt = Annotated[Path, typer.Option("--data", help="Folder with clinical_annotation.csv, trainset/, testset/.",
                                       rich_help_panel=DATA)]
CacheOpt = Annotated[Path, typer.Option("--cache", help="Crops cache (`lympho tile` writes it, `train` reads it).",
                                        rich_help_panel=DATA)]


@app.command()
@opt.report_errors
@deprecated_aliases({"--min-images": "min_bag", "--max-images": "max_bag"})
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("lympho-sample"),
    n_patients: Annotated[int, typer.Option("--n-patients", min=8, help="Patients (train + test).")] = 32,
    min_bag: Annotated[int, typer.Option("--min-bag", min=1, help="Fewest images per patient.")] = 8,
    max_bag: Annotated[int, typer.Option("--max-bag", min=1, help="Most images per patient.")] = 24,
    seed: opt.SeedOpt = 0,
    signal: Annotated[float, typer.Option("--signal", min=0.0, max=1.0, help=(
        "How much malignant patients differ (cells and lymphocyte count): 1 easy, smaller harder."))] = 1.0,
) -> None:
    """Write a synthetic dataset in the real layout (+ answers/test_labels.csv).

    Example: medchallenge lympho sample --out lympho-sample --n-patients 32 --min-bag 8 --max-bag 24
    """
    from medchallenge.core.console import log
    from medchallenge.lympho.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_patients, seed, min_bag, max_bag, signal=signal)
    log(f"wrote {counts['train']} training and {counts['test']} test patient(s) to {out}")


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache"})
def tile(
    data: DataOpt = Path("."),
    cache: CacheOpt = Path("cache"),
    crop: Annotated[int, typer.Option("--crop", min=8, help="Centre crop, px (the report: 112).")] = 112,
    workers: opt.WorkersOpt = 0,
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Decode and centre-crop every patient's images into a cache (default ./cache).

    Example: medchallenge lympho tile --crop 112 --cache cache
    """
    from medchallenge.lympho.cache import build_cache

    build_cache(data, cache, crop, workers, part, overwrite)


@app.command()
@opt.report_errors
def check(
    data: DataOpt = Path("."),
    crop: Annotated[int, typer.Option("--crop", min=8, help="The tile --crop every image must allow, px.")] = 112,
    workers: opt.WorkersOpt = 0,
    as_json: opt.JsonOpt = False,
) -> None:
    """Check the dataset before tile: the CSV, patient folders, image headers; every problem with its file.

    Exit 2 when a problem would stop tile (warnings alone: exit 0).

    Example: medchallenge lympho check --data . --json
    """
    from medchallenge.core.check import emit
    from medchallenge.lympho.check import check_dataset

    emit(check_dataset(data, crop, workers), as_json)


@app.command()
@opt.report_errors
@engine_flags(epochs=20, lr=1e-4, batch_size=32, scheduler=Scheduler.none, workers=2)
def train(
    cache: CacheOpt = Path("cache"),
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run folder (default runs/<model>[-fold<K>]-<time>-<id>).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", rich_help_panel=DATA,
                                                help="Share of patients for validation (without --n-folds).")] = 0.5,
    max_batch_images: Annotated[int, typer.Option(
        "--max-batch-images", min=1, rich_help_panel=DATA,
        help="Image budget of a batch (patients packed up to it and to --batch-size patients).")] = 256,
    max_images: Annotated[Optional[int], typer.Option("--max-images", min=1, rich_help_panel=DATA,
                                                      help="Training cap: subsample bigger bags each epoch.")] = None,
    model: Annotated[ModelName, typer.Option("--model", help="Patient model.", rich_help_panel=MODEL)] = ModelName.mean,
    clinical_features: Annotated[str, typer.Option("--clinical-features", rich_help_panel=MODEL,
                                                   help="From age,count,birth_month,birth_year.")] = "age,count",
    loss: Annotated[Loss, typer.Option("--loss", help="bce or dice (the report's soft Dice).",
                                       rich_help_panel=MODEL)] = Loss.bce,
    class_weight: Annotated[bool, typer.Option("--class-weight/--no-class-weight", rich_help_panel=MODEL,
                                               help="Weight BCE for the label imbalance (n_reactive/n_malignant).")]
    = True,
    pretrained: Annotated[bool, typer.Option("--pretrained/--no-pretrained", rich_help_panel=MODEL,
                                             help="ImageNet ResNet18 from the torch hub cache (no download).")] = True,
    weights: Annotated[Optional[Path], typer.Option("--weights", rich_help_panel=MODEL,
                                                    help="ResNet18 weights file (instead of the hub cache).")] = None,
    *,
    engine: EngineFlags,
) -> None:
    """Train a patient-level model; best.pt by validation balanced accuracy at the tuned threshold.

    --batch-size is the most patients (bags) per batch; --max-batch-images their image budget.

    Example: medchallenge lympho train --model mean --epochs 20 --lr 1e-4
    """
    from medchallenge.lympho.train import LymphoOptions, LymphoTrainer

    out = out or engine.run_dir(model.value)
    # --scheduler step keeps lympho's schedule: ×0.1 every 10 epochs
    config = engine.config(out, step_size=10, gamma=0.1)
    options = LymphoOptions(cache=cache, model=model.value, pretrained=pretrained, weights=weights,
                            clinical_features=[f.strip() for f in clinical_features.split(",") if f.strip()],
                            loss=loss.value, class_weight=class_weight, val_fraction=val_fraction,
                            max_batch_images=max_batch_images, max_images=max_images)
    LymphoTrainer(config, options).fit()


@app.command()
@opt.report_errors
def predict(
    checkpoint: opt.CheckpointsOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for submission.csv (parts: submission.part-K-of-N.csv).")]
    = Path("predictions"),
    scores: Annotated[bool, typer.Option("--scores", help="Add a Score column (probability of malignant).")] = False,
    tta: opt.TtaOpt = False,
    threshold: opt.ThresholdOpt = "auto",
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patients per forward pass.")] = 8,
    device: opt.DeviceOpt = "auto",
) -> None:
    """Write Id,Predicted (0/1) for every test patient, in the CSV's order, to --out/submission.csv.

    Several --checkpoint (or a cv folder): an ensemble averaging P(malignant); --tta averages the 8
    dihedral views of every image; --threshold auto uses the threshold tuned on validation.
    With --part K/N each job writes submission.part-K-of-N.csv; the job that completes the set merges
    them into submission.csv.

    Example: medchallenge lympho predict --checkpoint runs/latest --out predictions
    """
    from medchallenge.core.errors import OptionError
    from medchallenge.lympho.predict import predict_submission

    if out.suffix.lower() == ".csv":  # the old --out FILE: a folder named x.csv would surprise
        raise OptionError(f"--out {out}: --out is now a folder (it gets submission.csv); e.g. --out {out.parent}")
    predict_submission(checkpoint, data, out, device, with_scores=scores, part=part, overwrite=overwrite,
                       batch_size=batch_size, tta=tta, threshold=threshold)


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or runs/<glob>).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and oof.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with the challenge's metric.

    Balanced accuracy of the pooled rows, each predicted at its own fold's tuned threshold.

    Example: medchallenge lympho cv runs/mean-fold* --out cv
    """
    from medchallenge.core.cv import run_cv
    from medchallenge.lympho.metrics import cv_score

    run_cv(runs, "lympho", cv_score, out, as_json)


@app.command()
@opt.report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV in the clinical_annotation format with labels 0/1.")],
    predictions: Annotated[Path, typer.Option(
        "--predictions", help="predict's folder (its submission.csv) or a submission CSV (Id,Predicted[,Score]).")]
    = Path("predictions"),
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv (per patient) and plots.")]
    = Path("evaluation"),
    plots: Annotated[bool, typer.Option("--plots", help="Also draw the confusion matrix (confusion_matrix.png).")]
    = False,
    as_json: opt.JsonOpt = False,
) -> None:
    """Balanced accuracy, per-class recall, confusion matrix, ROC AUC when scores are given.

    Example: medchallenge lympho evaluate --predictions predictions --truth answers/test_labels.csv --json
    """
    from medchallenge.core.jsonio import dumps_json
    from medchallenge.core.report import write_report
    from medchallenge.lympho.metrics import evaluation_report
    from medchallenge.lympho.predict import submission_file

    report = evaluation_report(submission_file(predictions, out), truth, plots)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    _print_table(report.to_json(), f"Lymphocytosis: {predictions} vs {truth}")


def _print_table(result: dict, title: str) -> None:
    from rich.table import Table

    from medchallenge.core.console import out_console

    table = Table(title=title)
    for key in ("balanced_accuracy", "accuracy", "recall_reactive", "recall_malignant", "roc_auc", "n"):
        if key in result:
            value = result[key]
            # None: undefined (a recall of a class absent from the truth, strict JSON's null)
            shown = "undefined" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(key, shown)
    out_console.print(table)
    cm = result["confusion_matrix"]
    out_console.print(f"confusion matrix (rows truth reactive/malignant, columns prediction): {cm}")
