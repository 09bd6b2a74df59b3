"""``medchallenge midog``: sample, train, predict, evaluate for MIDOG 2021 mitosis detection."""

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
    CheckpointOpt,
    CompileOpt,
    DataOpt,
    DeviceOpt,
    EpochsOpt,
    JsonOpt,
    LrOpt,
    OutOpt,
    PretrainedOpt,
    ResumeOpt,
    SeedOpt,
    TensorboardOpt,
    WeightsOpt,
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("MIDOG 2021 mitosis detection with RetinaNet (metric: F1 of 30 px matching).")
IdsOpt = Annotated[Optional[str], typer.Option("--ids", help="Image ids, e.g. 1-10,51 or @file.")]
SpacingOpt = Annotated[Optional[float], typer.Option(
    "--spacing", min=1e-6, help="Pixel size, µm/px, for images whose TIFF has no resolution (grand-challenge"
                                " millimetres; default 0.25, MIDOG 2021's).")]


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("midog-sample"),
    n_images: Annotated[int, typer.Option("--n-images", min=3, help="Annotated images (train + test).")] = 12,
    width: Annotated[int, typer.Option("--width", min=64, help="Image width, px.")] = 1024,
    height: Annotated[int, typer.Option("--height", min=64, help="Image height, px.")] = 768,
    seed: SeedOpt = 0,
) -> None:
    """Write synthetic NNN.tiff images and MIDOG.json (test answers in answers/MIDOG.json).

    Example: medchallenge midog sample --out midog-sample --n-images 12
    """
    from medchallenge.core.console import log
    from medchallenge.midog.sample import write_sample_dataset

    counts = write_sample_dataset(out, n_images, width, height, seed)
    log(f"wrote {counts['train']} training, {counts['test']} test and {counts['unannotated']} unannotated image(s) to {out}")


@app.command()
@report_errors
def tile(
    data: DataOpt = Path("."),
    out: OutOpt = None,
    tile_size: Annotated[int, typer.Option("--tile-size", min=16, help="TIFF tile size, px.")] = 256,
    part: Annotated[Optional[str], typer.Option("--part", help="K/N: only part K of N (array jobs).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo images already tiled.")] = False,
) -> None:
    """Re-encode the images as tiled TIFFs (./tiles, with MIDOG.json) so patches decode lazily.

    Example: medchallenge midog tile --data /data/midog --out tiles
    """
    from medchallenge.midog.tiling import tile_images

    tile_images(data, out or Path("tiles"), tile_size, part=part, overwrite=overwrite)


@app.command()
@report_errors
def train(
    data: DataOpt = Path("."),
    annotations: Annotated[Optional[Path], typer.Option("--annotations", help="MIDOG.json (default DATA/MIDOG.json).")] = None,
    out: OutOpt = None,
    backbone: Annotated[str, typer.Option("--backbone", help="resnet50 (retinanet_resnet50_fpn_v2) or resnet18.")] = "resnet50",
    patch_size: Annotated[int, typer.Option("--patch-size", min=64, help="Patch size, px (kept at 1:1).")] = 512,
    patches_per_image: Annotated[int, typer.Option("--patches-per-image", min=1, help="Patches per image per epoch.")] = 10,
    trainable_backbone_layers: Annotated[int, typer.Option("--trainable-backbone-layers", min=0, max=5)] = 5,
    imposters: Annotated[str, typer.Option("--imposters", help="ignore (not a target) or negative (a class of its own).")] = "ignore",
    centre: Annotated[bool, typer.Option("--centre", help="Centre guided patches on the figure.")] = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images for validation.")] = 0.2,
    val_ids: Annotated[Optional[Path], typer.Option("--val-ids", help="File listing validation image ids.")] = None,
    epochs: EpochsOpt = 10,
    batch_size: BatchSizeOpt = 12,
    lr: LrOpt = 1e-4,
    pretrained: PretrainedOpt = True,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 2,
    seed: SeedOpt = 0,
    amp: AmpOpt = True,
    compile: CompileOpt = False,
    accumulate: AccumulateOpt = 1,
    resume: ResumeOpt = False,
    tensorboard: TensorboardOpt = False,
) -> None:
    """Train RetinaNet on guided patches; best.pt by F1 on whole validation images (writes ./runs/retinanet-<time>).

    Example: medchallenge midog train --patch-size 512 --batch-size 12 --epochs 100 --patches-per-image 10
    """
    from medchallenge.core.engine import TrainConfig
    from medchallenge.midog.train import MidogOptions, MidogTrainer

    out = out or Path("runs") / f"retinanet-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(out=out, epochs=epochs, batch_size=batch_size, lr=lr, scheduler="cosine", device=device,
                         workers=workers, seed=seed, amp=amp, compile=compile, accumulate=accumulate, resume=resume,
                         tensorboard=tensorboard, grad_clip=10.0)
    options = MidogOptions(data=data, annotations=annotations or data / "MIDOG.json", backbone=backbone,
                           patch_size=patch_size, patches_per_image=patches_per_image,
                           trainable_layers=trainable_backbone_layers, pretrained=pretrained, weights=weights,
                           imposters=imposters, centre=centre, val_fraction=val_fraction, val_ids=val_ids)
    result = MidogTrainer(config, options).fit()
    typer.echo(f"best validation F1 {result['best']['f1']}: {out / 'best.pt'}", err=True)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    ids: IdsOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Detections JSON.")] = Path("detections.json"),
    threshold: Annotated[str, typer.Option("--threshold", help="Score cut, or auto (best validation F1).")] = "0.5",
    overlap: Annotated[Optional[float], typer.Option("--overlap", help="Patch overlap fraction (default: training's).")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="points (px) or grand-challenge (the reference container's \"Multiple points\", mm).")] = "points",
    spacing: SpacingOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
) -> None:
    """Detect mitoses on whole images (overlapping patches, global NMS) into detections.json.

    Example: medchallenge midog predict --checkpoint runs/retinanet-*/best.pt --ids 1-10 --threshold auto
    """
    from medchallenge.midog.predict import predict_detections, read_ids

    predict_detections(checkpoint, data, out, read_ids(ids), threshold, overlap, device, batch_size, output_format,
                       spacing)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="MIDOG.json with the ground truth.")],
    detections: Annotated[Path, typer.Option(
        "--detections", help="Detections JSON from predict: points (px) or grand-challenge (mm).")] = Path("detections.json"),
    radius: Annotated[float, typer.Option("--radius", help="Matching radius, px.")] = 30.0,
    ids: IdsOpt = None,
    plots: Annotated[bool, typer.Option("--plots", help="Crops with truth and detections drawn (needs --data).")] = False,
    data: DataOpt = Path("."),
    spacing: Annotated[Optional[float], typer.Option(
        "--spacing", min=1e-6, help="µm/px to turn grand-challenge mm into px where the image is not in --data"
                                    " or its TIFF has no resolution.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Official F1 (greedy 30 px matching, TP/FP/FN summed over images), overall and per scanner; undefined = null.

    Example: medchallenge midog evaluate --detections detections.json --truth answers/MIDOG.json --json
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.io import write_json
    from medchallenge.midog.predict import evaluate_detections, read_ids

    result = evaluate_detections(detections, truth, radius, read_ids(ids), data, spacing)
    write_json(detections.parent / "evaluation" / "metrics.json", result)
    if plots:
        from medchallenge.midog.predict import plot_crops

        plot_crops(detections, truth, data, detections.parent / "evaluation", spacing_um=spacing)
    if as_json:
        typer.echo(dumps_json({k: v for k, v in result.items() if k != "images"}))
        return
    from rich.table import Table

    table = Table(title=f"MIDOG: {detections} vs {truth}")
    for column in ("scope", "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == "scope" else "right")
    rows = [("all", result)] + list(result["by_scanner"].items())
    for name, r in rows:
        table.add_row(name, str(r["tp"]), str(r["fp"]), str(r["fn"]), *(_score(r[k]) for k in ("precision", "recall", "f1")))
    out_console.print(table)


def _score(value: float) -> str:
    """A score for the table; an undefined one (0/0) shows as 'undefined', never as a number."""
    return "undefined" if value != value else f"{value:.4f}"
