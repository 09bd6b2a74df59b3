"""``medchallenge midog``: sample, tile, train, predict, evaluate for MIDOG 2021 mitosis detection."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, choices, deprecated_aliases, engine_flags

app = opt.challenge_app("MIDOG 2021 mitosis detection with RetinaNet (metric: F1 of 30 px matching).")
DATA, MODEL = "Data", "Model"


Backbone = choices("Backbone", "resnet50", "resnet18")


Imposters = choices("Imposters", "ignore", "negative")


OutputFormat = choices("OutputFormat", "both", "points", "grand-challenge")


DataOpt = Annotated[Path, typer.Option("--data", help="Folder of NNN.tiff images (and MIDOG.json).",
                                       rich_help_panel=DATA)]
CasesOpt = Annotated[Optional[str], typer.Option("--cases", help="Image numbers, e.g. 1-10,51 or @file.",
                                                 rich_help_panel=DATA)]
SpacingOpt = Annotated[Optional[float], typer.Option(
    "--spacing", min=1e-6, rich_help_panel=DATA,
    help="Pixel size, µm/px, for images whose TIFF has no resolution (grand-challenge millimetres; default 0.25,"
         " MIDOG 2021's).")]


@app.command()
@opt.report_errors
@deprecated_aliases({"--width": "size"})
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("midog-sample"),
    n_images: Annotated[int, typer.Option("--n-images", min=3, help="Annotated images (train + test).")] = 12,
    size: Annotated[int, typer.Option("--size", min=64, help="Image width, px (height = round(0.75·width)).")] = 1024,
    height: Annotated[Optional[int], typer.Option("--height", min=64, hidden=True)] = None,
    seed: opt.SeedOpt = 0,
) -> None:
    """Write synthetic NNN.tiff images and MIDOG.json (test answers in answers/MIDOG.json).

    Example: medchallenge midog sample --out midog-sample --n-images 12 --size 1024
    """
    from medchallenge.core.console import log, warn
    from medchallenge.midog.sample import write_sample_dataset

    if height is not None:  # the old --width/--height pair: honoured one more release
        warn("--height is deprecated and will be removed; use --size (height = round(0.75·width))")
    counts = write_sample_dataset(out, n_images, size, height or round(0.75 * size), seed)
    log(f"wrote {counts['train']} training, {counts['test']} test and {counts['unannotated']} unannotated image(s) to {out}")


@app.command()
@opt.report_errors
def check(
    data: DataOpt = Path("."),
    as_json: opt.JsonOpt = False,
    workers: opt.WorkersOpt = 0,
) -> None:
    """Check MIDOG.json and the TIFF headers (nothing decoded): counts, sizes, pixel sizes, every problem
    with its file; exit 2 when one would stop tile.

    Example: medchallenge midog check --data /data/midog --workers 4
    """
    from medchallenge.core.check import emit
    from medchallenge.midog.check import check_dataset

    emit(check_dataset(data, workers), as_json)


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache", "--tile-size": "tiff_tile"})
def tile(
    data: DataOpt = Path("."),
    cache: Annotated[Path, typer.Option("--cache", help="Folder of tiled TIFF copies to write.",
                                        rich_help_panel=DATA)] = Path("tiles"),
    tiff_tile: Annotated[int, typer.Option("--tiff-tile", min=16, help="TIFF tile size, px.")] = 256,
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
    workers: opt.WorkersOpt = 0,
) -> None:
    """Re-encode the images as tiled TIFFs (./tiles, with MIDOG.json) so patches decode lazily.

    Example: medchallenge midog tile --data /data/midog --cache tiles --workers 4
    """
    from medchallenge.midog.tiling import tile_images

    tile_images(data, cache, tiff_tile, part=part, overwrite=overwrite, workers=workers)


@app.command()
@opt.report_errors
@deprecated_aliases({"--backbone": "model"})
@engine_flags(epochs=10, batch_size=12, lr=1e-4, grad_clip=10.0, workers=2)
def train(
    data: DataOpt = Path("."),
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", rich_help_panel=DATA,
        help="Tile cache from `midog tile` to read the images from (default: the TIFFs in --data).")] = None,
    annotations: Annotated[Optional[Path], typer.Option(
        "--annotations", rich_help_panel=DATA, help="MIDOG.json (default: in --cache, else in --data).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/retinanet[-fold<K>]-<time>-...).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images for validation.",
                                                rich_help_panel=DATA)] = 0.2,
    val_ids: Annotated[Optional[Path], typer.Option("--val-ids", help="File listing validation image ids (not with --n-folds).",
                                                    rich_help_panel=DATA)] = None,
    patch_size: Annotated[int, typer.Option("--patch-size", min=64, help="Patch size, px (kept at 1:1).",
                                            rich_help_panel=DATA)] = 512,
    patches_per_image: Annotated[int, typer.Option("--patches-per-image", min=1, rich_help_panel=DATA,
                                                   help="Patches per image per epoch.")] = 10,
    centre: Annotated[bool, typer.Option("--centre", help="Centre guided patches on the figure.",
                                         rich_help_panel=DATA)] = False,
    model: Annotated[Backbone, typer.Option("--model", rich_help_panel=MODEL,
                                            help="Backbone: resnet50 (retinanet_resnet50_fpn_v2) or resnet18.")] = Backbone.resnet50,
    trainable_backbone_layers: Annotated[int, typer.Option("--trainable-backbone-layers", min=0, max=5,
                                                           rich_help_panel=MODEL)] = 5,
    imposters: Annotated[Imposters, typer.Option("--imposters", rich_help_panel=MODEL,
                                                 help="ignore (not a target) or negative (a class of its own).")] = Imposters.ignore,
    pretrained: Annotated[bool, typer.Option("--pretrained/--no-pretrained", rich_help_panel=MODEL,
                                             help="COCO RetinaNet weights from the torch hub cache (no download).")] = True,
    weights: Annotated[Optional[Path], typer.Option("--weights", rich_help_panel=MODEL,
                                                    help="COCO RetinaNet weights file (instead of the hub cache).")] = None,
    *,
    engine: EngineFlags,
) -> None:
    """Train RetinaNet on guided patches; best.pt by F1 on whole validation images (writes ./runs/retinanet-<time>).

    Example: medchallenge midog train --cache tiles --patch-size 512 --batch-size 12 --epochs 100
    """
    from medchallenge.midog.train import MidogOptions, MidogTrainer

    out = out or engine.run_dir("retinanet")
    options = MidogOptions(data=data, annotations=annotations, cache=cache, model=model.value, patch_size=patch_size,
                           patches_per_image=patches_per_image, trainable_layers=trainable_backbone_layers,
                           pretrained=pretrained, weights=weights, imposters=imposters.value, centre=centre,
                           val_fraction=val_fraction, val_ids=val_ids)
    MidogTrainer(engine.config(out), options).fit()


@app.command()
@opt.report_errors
@deprecated_aliases({"--ids": "cases"})
def predict(
    checkpoint: opt.CheckpointsOpt,
    data: DataOpt = Path("."),
    cases: CasesOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for detections.json (px) and grand-challenge.json (mm).")]
    = Path("predictions"),
    threshold: opt.ThresholdOpt = "auto",
    tta: opt.TtaOpt = False,
    overlap: Annotated[Optional[float], typer.Option("--overlap", help="Patch overlap fraction (default: training's).")] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help="both, points (detections.json, px) or grand-challenge (grand-challenge.json: the reference"
                         " container's \"Multiple points\", mm).")] = OutputFormat.both,
    spacing: SpacingOpt = None,
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
    batch_size: opt.BatchSizeOpt = 8,
    device: opt.DeviceOpt = "auto",
) -> None:
    """Detect mitoses on whole images (overlapping patches, global NMS) into the folder --out; several
    --checkpoint: an ensemble (detections merged by distance); --tta: the 8 dihedral views of each patch.

    Example: medchallenge midog predict --checkpoint runs/latest --cases 1-10 --tta
    """
    from medchallenge.midog.predict import predict_detections, read_ids

    predict_detections(checkpoint, data, out, read_ids(cases), threshold, overlap, device, batch_size,
                       output_format.value, spacing, part, overwrite, tta)


@app.command()
@opt.report_errors
@deprecated_aliases({"--detections": "predictions", "--ids": "cases"})
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="MIDOG.json with the ground truth.")],
    predictions: Annotated[Path, typer.Option(
        "--predictions", help="predict's folder (its detections.json or parts), or a detections JSON: points (px)"
                              " or grand-challenge (mm).")] = Path("predictions"),
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv and plots.")] = Path("evaluation"),
    radius: Annotated[float, typer.Option("--radius", help="Matching radius, px.")] = 30.0,
    cases: CasesOpt = None,
    plots: Annotated[bool, typer.Option("--plots", help="Crops with truth and detections drawn (needs --data).")] = False,
    data: DataOpt = Path("."),
    spacing: Annotated[Optional[float], typer.Option(
        "--spacing", min=1e-6, help="µm/px to turn grand-challenge mm into px where the image is not in --data"
                                    " or its TIFF has no resolution.")] = None,
    as_json: opt.JsonOpt = False,
) -> None:
    """Official F1 (greedy 30 px matching, TP/FP/FN summed over images), overall and per scanner; undefined = null.

    Example: medchallenge midog evaluate --predictions predictions --truth answers/MIDOG.json --json
    """
    from medchallenge.core.jsonio import dumps_json
    from medchallenge.core.report import write_report
    from medchallenge.midog.predict import evaluate_detections, evaluation_report, plot_crops, read_ids

    result = evaluate_detections(predictions, truth, radius, read_ids(cases), data, spacing)
    draw = (lambda folder: plot_crops(predictions, truth, data, folder, spacing_um=spacing)) if plots else None
    report = evaluation_report(result, draw)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    _print_table(result, f"MIDOG: {predictions} vs {truth}")


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or runs/<glob>).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and oof.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with the challenge's metric.

    MIDOG: F1 from the TP/FP/FN of every validation image summed over the folds (each fold at its own
    tuned threshold). Example: medchallenge midog cv runs/retinanet-fold*
    """
    from medchallenge.core.cv import run_cv
    from medchallenge.midog.metrics import cv_score

    run_cv(runs, "midog", cv_score, out, as_json)


def _print_table(result: dict, title: str) -> None:
    from rich.table import Table

    from medchallenge.core.console import out_console

    table = Table(title=title)
    for column in ("scope", "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == "scope" else "right")
    rows = [("all", result)] + list(result["by_scanner"].items())
    for name, r in rows:
        table.add_row(name, str(r["tp"]), str(r["fp"]), str(r["fn"]), *(_score(r[k]) for k in ("precision", "recall", "f1")))
    out_console.print(table)


def _score(value: float) -> str:
    """A score for the table; an undefined one (0/0) shows as 'undefined', never as a number."""
    return "undefined" if value != value else f"{value:.4f}"
