"""``medchallenge panda``: sample, tile, train, predict, evaluate for PANDA ISUP grading."""

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


MaskModelOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--mask-model", help="U-Net checkpoint(s) making the mask channel (one per provider, or one unified)."),
]


@app.command()
@report_errors
def train(
    tiles: TilesOpt = Path("tiles"),
    out: OutOpt = None,
    model: Annotated[str, typer.Option("--model", help="classifier (ISUP grade) or unet (tile segmentation).")] = "classifier",
    arch: Annotated[str, typer.Option("--arch", help="efficientnet-b0..b7, resnet18/34/50, resnext50_32x4d, alexnet, vgg16.")] = "efficientnet-b0",
    label_encoding: Annotated[str, typer.Option("--label-encoding", help="ordinal, class, onehot or tile-vote.")] = "ordinal",
    layout: Annotated[str, typer.Option("--layout", help="mosaic (6×6 grid) or strip (the report's 9216×256).")] = "mosaic",
    masks: Annotated[Optional[str], typer.Option("--masks", help="Mask-guided classifier: 'truth' (the cache's mask tiles) or a mask folder from `panda predict` with a U-Net.")] = None,
    mask_model: MaskModelOpt = None,
    label_scheme: Annotated[Optional[str], typer.Option("--label-scheme", help="Mask labels: provider (Radboud 0–5, Karolinska 0–2) or unified (0 background, 1 benign, 2 cancer). U-Net default: unified.")] = None,
    provider: Annotated[str, typer.Option("--provider", help="U-Net: slides of radboud, karolinska or both (both needs --label-scheme unified).")] = "both",
    seg_loss: Annotated[str, typer.Option("--seg-loss", help="U-Net loss: dice (mean foreground Dice), dice-ce or ce (class-weighted).")] = "dice-ce",
    batching: Annotated[str, typer.Option("--batching", help="U-Net: slide (a slide's tiles form a batch) or shuffle (tiles across slides).")] = "slide",
    unet_depth: Annotated[int, typer.Option("--unet-depth", min=1, help="U-Net poolings (the report: 3).")] = 3,
    unet_width: Annotated[int, typer.Option("--unet-width", min=1, help="U-Net channels at full resolution.")] = 32,
    grad_checkpoint: Annotated[bool, typer.Option("--grad-checkpoint", help="Recompute block activations in backward (less GPU memory).")] = False,
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
    """Train the ISUP classifier (best.pt by validation QWK) or, with --model unet, the tile U-Net (by Dice).

    Batch size counts slides (tiles with --model unet --batching shuffle). Examples:

      medchallenge panda train --arch efficientnet-b0 --epochs 20 --batch-size 2 --lr 3e-4

      medchallenge panda train --model unet --label-scheme provider --provider radboud --lr 1e-3 --out runs/unet-r

      medchallenge panda train --masks truth --label-scheme provider --batch-size 4 --channels-last
    """
    from medchallenge.core.engine import TrainConfig
    from medchallenge.core.errors import OptionError

    if model not in ("classifier", "unet"):
        raise OptionError(f"--model {model}: expected classifier or unet")
    if out is None:
        out = Path("runs") / f"{arch if model == 'classifier' else 'unet'}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(
        out=out, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        device=device, workers=workers, seed=seed, amp=amp, channels_last=channels_last, compile=compile,
        accumulate=accumulate, resume=resume, tensorboard=tensorboard,
    )
    if model == "unet":
        from medchallenge.panda.segtrain import PandaSegTrainer, SegOptions

        if masks or mask_model:
            raise OptionError("--masks/--mask-model are for the mask-guided classifier, not --model unet")
        seg = SegOptions(tiles=tiles, provider=provider, scheme=label_scheme or "unified", loss=seg_loss,
                         batching=batching, depth=unet_depth, width=unet_width, val_fraction=val_fraction,
                         n_folds=n_folds, fold=fold)
        result = PandaSegTrainer(config, seg).fit()
        typer.echo(f"best validation Dice {result['best']['dice']}: {out / 'best.pt'}", err=True)
        return
    from medchallenge.panda.train import PandaOptions, PandaTrainer

    if mask_model:
        if masks:
            raise OptionError("give --masks or --mask-model, not both")
        from medchallenge.panda.segment import predict_masks

        for unet in mask_model:  # predicted once into the run folder; reruns skip finished slides
            predict_masks(unet, out / "masks", tiles=tiles, n_overlays=4, device=device)
        masks = str(out / "masks")
    options = PandaOptions(tiles=tiles, arch=arch, encoding=label_encoding, layout=layout, pretrained=pretrained,
                           weights=weights, val_fraction=val_fraction, n_folds=n_folds, fold=fold, masks=masks,
                           label_scheme=label_scheme, grad_checkpoint=grad_checkpoint)
    result = PandaTrainer(config, options).fit()
    typer.echo(f"best validation QWK {result['best']['qwk']}: {out / 'best.pt'}", err=True)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    tiles: Annotated[Optional[Path], typer.Option("--tiles", help="Use a tile cache instead of tiling raw slides.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Submission CSV to write (default submission.csv); a folder for a U-Net (default pred_masks).")] = None,
    mask_model: MaskModelOpt = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average mode-0 and mode-2 tilings.")] = False,
    n_overlays: Annotated[int, typer.Option("--n-overlays", min=0, help="U-Net: overlay PNGs to draw.")] = 4,
    batch_size: BatchSizeOpt = 2,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    skip_missing: SkipMissingOpt = False,
) -> None:
    """Write submission.csv (image_id,isup_grade) for every test.csv slide — or, given a U-Net, mask tiles + overlays.

    Examples:

      medchallenge panda predict --checkpoint runs/efficientnet-b0-*/best.pt --data . --out submission.csv --tta

      medchallenge panda predict --checkpoint runs/unet/best.pt --tiles tiles --out pred_masks

      medchallenge panda predict --checkpoint runs/masked/best.pt --mask-model runs/unet/best.pt --data .
    """
    from medchallenge.core.checkpoint import load_checkpoint
    from medchallenge.core.errors import OptionError

    if load_checkpoint(checkpoint, challenge="panda", models=["classifier", "unet"])["model"]["name"] == "unet":
        from medchallenge.panda.segment import predict_masks

        if out is not None and out.suffix == ".csv":
            raise OptionError(f"--out {out}: a U-Net writes a folder of mask tiles, not a CSV")
        if tta or mask_model:
            raise OptionError("--tta and --mask-model are for classifier checkpoints")
        predict_masks(checkpoint, out or Path("pred_masks"), tiles=tiles, data=None if tiles else data,
                      n_overlays=n_overlays, device=device, batch_size=batch_size, workers=workers)
        return
    from medchallenge.panda.predict import predict_submission

    predict_submission(checkpoint, out or Path("submission.csv"), data=data, tiles=tiles, tta=tta, device=device,
                       batch_size=batch_size, workers=workers, skip_missing=skip_missing, mask_models=mask_model)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV with image_id,isup_grade[,data_provider] (train.csv or an answer key); with --masks, the tile cache holding the true mask tiles.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Submission CSV (image_id,isup_grade).")] = Path("submission.csv"),
    masks: Annotated[Optional[Path], typer.Option("--masks", help="Score a mask folder from `panda predict` with a U-Net instead.")] = None,
    subset: Annotated[bool, typer.Option("--subset", help="Score only the submitted ids when the submission covers part of the truth (e.g. a fold of train.csv); without it, a missing id is an error, as in the challenge.")] = False,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quadratic weighted kappa, accuracy, per-provider QWK and the confusion matrix (table, metrics.json, PNG).

    Every truth id needs a prediction (the challenge's rule) unless --subset. A kappa that is
    undefined (one grade on both sides) is reported as "undefined" (null in JSON), as the
    organisers' scikit-learn call returns NaN.

    With --masks: per-class Dice, tumour Dice and pixel accuracy per provider.

    Examples:

      medchallenge panda evaluate --predictions submission.csv --truth answers/test_labels.csv --json

      medchallenge panda evaluate --masks pred_masks --truth tiles
    """
    from medchallenge.core.console import out_console
    from medchallenge.core.io import write_json
    from medchallenge.core.plots import plot_confusion_matrix
    from medchallenge.panda.metrics import N_GRADES, evaluate_masks, evaluate_submission

    if masks is not None:
        seg = evaluate_masks(masks, truth)
        write_json((out or masks) / "metrics.json", seg)
        if as_json:
            typer.echo(dumps_json(seg))
            return
        _print_mask_scores(seg, masks, truth)
        return
    result = evaluate_submission(predictions, truth, subset=subset)
    out = out or predictions.parent / "evaluation"
    write_json(out / "metrics.json", result)
    plot_confusion_matrix(result["confusion_matrix"], [str(g) for g in range(N_GRADES)], out / "confusion_matrix.png",
                          title=f"ISUP grade (QWK {_score(result['qwk'], 3)})")
    if as_json:
        typer.echo(dumps_json(result))
        return
    from rich.table import Table

    scope = f" (--subset: {result['n']} of {result['n_reference']} truth ids scored)" if result["subset"] else ""
    table = Table(title=f"PANDA: {predictions} vs {truth}{scope}")
    for column in ("scope", "n", "QWK", "accuracy"):
        table.add_column(column, justify="right" if column != "scope" else "left")
    table.add_row("all", str(result["n"]), _score(result["qwk"]), _score(result["accuracy"]))
    for provider, value in result["qwk_by_provider"].items():
        table.add_row(provider, str(result["n_by_provider"][provider]), _score(value),
                      _score(result["accuracy_by_provider"][provider]))
    out_console.print(table)
    matrix = Table(title="confusion matrix (rows truth, columns prediction)")
    matrix.add_column("ISUP")
    for g in range(N_GRADES):
        matrix.add_column(str(g), justify="right")
    for g, row in enumerate(result["confusion_matrix"]):
        matrix.add_row(str(g), *[str(v) for v in row])
    out_console.print(matrix)
    out_console.print(f"metrics and confusion_matrix.png in {out}")


def _score(value: float, digits: int = 4) -> str:
    """A score for the table, or "undefined" for NaN (e.g. kappa with one grade on both sides)."""
    return "undefined" if value != value else f"{value:.{digits}f}"


def _print_mask_scores(seg: dict, masks: Path, truth: Path) -> None:
    from rich.table import Table

    from medchallenge.core.console import out_console

    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    scopes = {**seg["providers"], **({"all": seg["all"]} if "all" in seg else {})}
    for scope, s in scopes.items():
        table = Table(title=f"PANDA masks ({seg['scheme']} labels), {scope}: {masks} vs {truth}")
        for column in ("class", "Dice"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, value in s["dice"].items():
            table.add_row(name, fmt(value))
        table.add_row("mean (foreground)", fmt(s["mean_dice"]))
        table.add_row("tumour", fmt(s["tumour_dice"]))
        table.add_row("pixel accuracy", fmt(s["pixel_accuracy"]))
        out_console.print(table)
        out_console.print(f"{s['n_slides']} slide(s), {s['pixels']} pixels")
    if seg["n_skipped_without_truth"]:
        out_console.print(f"{seg['n_skipped_without_truth']} slide(s) without true masks skipped")
