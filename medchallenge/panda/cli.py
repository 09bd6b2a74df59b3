"""``medchallenge panda``: sample, tile, train, predict, evaluate for PANDA ISUP grading."""

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, choices, deprecated_aliases, engine_flags
from medchallenge.core.jsonio import dumps_json

app = opt.challenge_app("PANDA prostate ISUP grading from whole-slide images (metric: quadratic weighted kappa).")
DATA, MODEL = "Data", "Model"


# ``unet`` (tile segmentation) or a classifier backbone (ISUP grade)
Model = choices("Model", "unet", *(f"efficientnet-b{i}" for i in range(8)), "resnet18", "resnet34", "resnet50",
                "resnext50_32x4d", "alexnet", "vgg16")


Split = choices("Split", "train", "test")


class Encoding(str, enum.Enum):
    ordinal = "ordinal"
    cls = "class"
    onehot = "onehot"
    tile_vote = "tile-vote"


Layout = choices("Layout", "mosaic", "strip")


Scheme = choices("Scheme", "provider", "unified")


Provider = choices("Provider", "both", "radboud", "karolinska")


Loss = choices("Loss", "dice-ce", "dice", "ce")


Batching = choices("Batching", "slide", "shuffle")


DataOpt = Annotated[Path, typer.Option("--data", help="Dataset folder (train.csv, test.csv, train_images/, ...).",
                                       rich_help_panel=DATA)]
SkipMissingOpt = Annotated[bool, typer.Option("--skip-missing", help="Warn about slides missing on disk instead of failing.",
                                              rich_help_panel=DATA)]


@app.command()
@opt.report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("panda-sample"),
    n_slides: Annotated[int, typer.Option("--n-slides", min=4, help="Number of slides (train + test).")] = 24,
    size: Annotated[int, typer.Option("--size", min=256, help="Level-0 width and height of each slide, px.")] = 2048,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of slides in the test split.")] = 0.25,
    seed: opt.SeedOpt = 0,
) -> None:
    """Write a small synthetic PANDA dataset in the real layout (+ answers/test_labels.csv).

    Example: medchallenge panda sample --out panda-sample --n-slides 24
    """
    from medchallenge.core.console import log
    from medchallenge.panda.sample import write_sample_dataset

    write_sample_dataset(out, n_slides=n_slides, seed=seed, size=size, test_fraction=test_fraction)
    log(f"wrote {n_slides} slides to {out} (test answers in {out / 'answers' / 'test_labels.csv'})")


@app.command()
@opt.report_errors
def check(
    data: DataOpt = Path("."),
    level: Annotated[str, typer.Option("--level", help="The level `tile` will cut (a number or auto): slides and masks without it are problems.")] = "1",
    skip_missing: SkipMissingOpt = False,
    workers: opt.WorkersOpt = 0,
    as_json: opt.JsonOpt = False,
) -> None:
    """Check train.csv, test.csv, slides and masks as `tile` reads them (headers only); exit 2 when tile would stop.

    Lists every problem with its file: bad CSV rows, missing or unreadable slides, slides or masks
    without the level, mask labels outside the provider's, mask sizes unlike their slide's.

    Example: medchallenge panda check --data . --level 1
    """
    from medchallenge.core.check import emit
    from medchallenge.panda.check import check_dataset
    from medchallenge.panda.tiles import parse_level

    emit(check_dataset(data, parse_level(level), skip_missing=skip_missing, workers=workers), as_json)


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache"})
def tile(
    data: DataOpt = Path("."),
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", rich_help_panel=DATA,
        help="Tile cache to write (default DATA/tiles, DATA/tiles_test for --split test).")] = None,
    split: Annotated[Split, typer.Option("--split", help="train (train.csv, with masks) or test (test.csv).",
                                         rich_help_panel=DATA)] = Split.train,
    level: Annotated[str, typer.Option("--level", help="Pyramid level to cut tiles from (0 = full resolution), or auto: level 1 where every slide has it, else the nearest level all have.")] = "1",
    n_tiles: Annotated[int, typer.Option("--n-tiles", min=1, help="Tiles kept per slide.")] = 36,
    tile_size: Annotated[int, typer.Option("--tile-size", min=8, help="Tile width and height, px.")] = 256,
    mode: Annotated[int, typer.Option("--mode", help="0: grid from the padded corner; 2: shifted by half a tile.")] = 0,
    workers: opt.WorkersOpt = 0,
    part: opt.PartOpt = None,
    skip_missing: SkipMissingOpt = False,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Cut each slide's N most-tissue tiles into a cache (default ./tiles, ./tiles_test for --split test).

    Example: medchallenge panda tile --level 1 --n-tiles 36
    """
    from medchallenge.core.errors import OptionError
    from medchallenge.panda.tiles import parse_level, tile_slides

    if mode not in (0, 2):
        raise OptionError(f"--mode {mode}: expected 0 or 2")
    if cache is None:
        cache = data / ("tiles" if split is Split.train else "tiles_test")
    tile_slides(data, cache, split=split.value, level=parse_level(level), n_tiles=n_tiles, tile_size=tile_size,
                mode=mode, workers=workers, part=part, skip_missing=skip_missing, overwrite=overwrite)


MaskModelOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--mask-model", help="U-Net checkpoint(s) making the mask channel (one per provider, or one unified).",
                 rich_help_panel=MODEL),
]
CacheOpt = Annotated[Path, typer.Option("--cache", help="Tile cache written by `panda tile`.", rich_help_panel=DATA)]


@app.command()
@opt.report_errors
@deprecated_aliases({"--tiles": "cache", "--arch": "model", "--unet-depth": "depth", "--unet-width": "width",
                     "--seg-loss": "loss"})
@engine_flags(epochs=20, batch_size=2, lr=3e-4, warmup_epochs=1.0, workers=2)
def train(
    cache: CacheOpt = Path("tiles"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<model>[-fold<K>]-<time>-...).")] = None,
    model: Annotated[Model, typer.Option("--model", rich_help_panel=MODEL,
                                         help="unet (tile segmentation, best by Dice) or a classifier backbone"
                                              " (ISUP grade, best by QWK).")] = Model.efficientnet_b0,
    label_encoding: Annotated[Encoding, typer.Option("--label-encoding", rich_help_panel=MODEL,
                                                     help="Classifier output: ordinal, class, onehot or tile-vote.")] = Encoding.ordinal,
    layout: Annotated[Layout, typer.Option("--layout", rich_help_panel=MODEL,
                                           help="mosaic (6×6 grid) or strip (the report's 9216×256).")] = Layout.mosaic,
    masks: Annotated[Optional[str], typer.Option("--masks", rich_help_panel=DATA, help="Mask-guided classifier: 'truth' (the cache's mask tiles) or a mask folder from `panda predict` with a U-Net.")] = None,
    mask_model: MaskModelOpt = None,
    label_scheme: Annotated[Optional[Scheme], typer.Option("--label-scheme", rich_help_panel=DATA, help="Mask labels: provider (Radboud 0–5, Karolinska 0–2) or unified (0 background, 1 benign, 2 cancer). U-Net default: unified.")] = None,
    provider: Annotated[Provider, typer.Option("--provider", rich_help_panel=DATA, help="U-Net: slides of radboud, karolinska or both (both needs --label-scheme unified).")] = Provider.both,
    loss: Annotated[Optional[Loss], typer.Option("--loss", rich_help_panel=MODEL, help="U-Net loss: dice (mean foreground Dice), dice-ce (default) or ce (class-weighted).")] = None,
    batching: Annotated[Batching, typer.Option("--batching", rich_help_panel=DATA, help="U-Net: slide (a slide's tiles form a batch) or shuffle (tiles across slides).")] = Batching.slide,
    depth: Annotated[int, typer.Option("--depth", min=1, rich_help_panel=MODEL, help="U-Net poolings (the report: 3).")] = 3,
    width: Annotated[int, typer.Option("--width", min=1, rich_help_panel=MODEL, help="U-Net channels at full resolution.")] = 32,
    grad_checkpoint: Annotated[bool, typer.Option("--grad-checkpoint", rich_help_panel=MODEL, help="Recompute block activations in backward (less GPU memory).")] = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", rich_help_panel=DATA, help="Share of slides for validation.")] = 0.2,
    groups: Annotated[Optional[Path], typer.Option("--groups", rich_help_panel=DATA, help="CSV image_id,group: slides of a group (duplicates, serial sections) stay on one side of every split.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", rich_help_panel=DATA, help="A train.csv (e.g. `panda clean`'s): train on the cached slides it lists, with its grades.")] = None,
    precise_bn: Annotated[bool, typer.Option("--precise-bn/--no-precise-bn", rich_help_panel=MODEL, help="Classifier: re-estimate BatchNorm statistics on the training slides before each validation (short runs need it).")] = True,
    pretrained: opt.PretrainedOpt = True,
    weights: opt.WeightsOpt = None,
    *,
    engine: EngineFlags,
) -> None:
    """Train the ISUP classifier (best.pt by validation QWK) or, with --model unet, the tile U-Net (by Dice).

    The classifier's validation QWK grades the ordinal score with 5 cut-offs tuned on the
    validation slides (stored in best.pt for predict --threshold auto), next to the rounded
    score's (qwk_fixed). Batch size counts slides (tiles with --model unet --batching shuffle). Examples:

      medchallenge panda train --model efficientnet-b0 --epochs 20 --batch-size 2 --lr 3e-4

      medchallenge panda train --n-folds 5 --fold 0 --groups patients.csv    (then: panda cv runs/*-fold*)

      medchallenge panda train --model unet --label-scheme provider --provider radboud --lr 1e-3 --out runs/unet-r

      medchallenge panda train --masks truth --label-scheme provider --batch-size 4 --channels-last
    """
    out = out or engine.run_dir(model.value)
    if model is Model.unet:
        _train_unet(cache, out, engine, masks=masks, mask_model=mask_model, provider=provider.value,
                    scheme=(label_scheme or Scheme.unified).value, loss=(loss or Loss.dice_ce).value,
                    batching=batching.value, depth=depth, width=width, val_fraction=val_fraction, groups=groups)
        return
    from medchallenge.core.errors import OptionError
    from medchallenge.panda.train import PandaOptions, PandaTrainer

    if loss is not None:
        raise OptionError("--loss is the U-Net's loss (--model unet); the classifier's loss follows --label-encoding")
    masks = _mask_source(cache, out, masks, mask_model, engine.device)
    options = PandaOptions(cache=cache, arch=model.value, encoding=label_encoding.value, layout=layout.value,
                           pretrained=pretrained, weights=weights, val_fraction=val_fraction, groups=groups,
                           labels=labels, masks=masks, label_scheme=label_scheme.value if label_scheme else None,
                           grad_checkpoint=grad_checkpoint, precise_bn=precise_bn)
    PandaTrainer(engine.config(out), options).fit()


def _train_unet(cache: Path, out: Path, engine: EngineFlags, masks: Optional[str], mask_model: Optional[list[Path]],
                **seg: object) -> None:
    from medchallenge.core.errors import OptionError
    from medchallenge.panda.segtrain import PandaSegTrainer, SegOptions

    if masks or mask_model:
        raise OptionError("--masks/--mask-model are for the mask-guided classifier, not --model unet")
    PandaSegTrainer(engine.config(out), SegOptions(cache=cache, **seg)).fit()  # type: ignore[arg-type]


def _mask_source(cache: Path, out: Path, masks: Optional[str], mask_model: Optional[list[Path]],
                 device: str) -> Optional[str]:
    """The classifier's mask channel source: --masks as given, or --mask-model predicted into the run folder."""
    if not mask_model:
        return masks
    from medchallenge.core.errors import OptionError
    from medchallenge.panda.segpredict import predict_masks

    if masks:
        raise OptionError("give --masks or --mask-model, not both")
    for unet in mask_model:  # predicted once into the run folder; reruns skip finished slides
        predict_masks(unet, out / "masks", tiles=cache, n_overlays=4, device=device)
    return str(out / "masks")


@app.command()
@opt.report_errors
@deprecated_aliases({"--tiles": "cache"})
def predict(
    checkpoint: opt.CheckpointsOpt = None,  # type: ignore[assignment]  # not needed with --merge-parts
    data: DataOpt = Path("."),
    cache: Annotated[Optional[Path], typer.Option("--cache", rich_help_panel=DATA, help="Use a tile cache instead of tiling raw slides.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder: OUT/submission.csv for a classifier (OUT/submission.part-K-of-N.csv with --part), the mask folder for a U-Net.")] = Path("predictions"),
    mask_model: MaskModelOpt = None,
    tta: opt.TtaOpt = False,  # classifier: mode-0 + mode-2 tilings × the 8 dihedral views of each tile (16×); U-Net: flips (4×)
    threshold: opt.ThresholdOpt = "auto",
    n_overlays: Annotated[int, typer.Option("--n-overlays", min=0, help="U-Net: overlay PNGs to draw.")] = 4,
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
    merge_parts: Annotated[bool, typer.Option("--merge-parts", help="Join OUT/submission.part-K-of-N.csv of all N parts into OUT/submission.csv (no --checkpoint).")] = False,
    batch_size: opt.BatchSizeOpt = 2,
    device: opt.DeviceOpt = "auto",
    workers: opt.WorkersOpt = 0,
    skip_missing: SkipMissingOpt = False,
) -> None:
    """Write OUT/submission.csv (image_id,isup_grade) for every test.csv slide — or, given a U-Net, mask tiles + overlays.

    Several --checkpoint (or a cv folder) form an ensemble: the classifiers' ordinal scores (the
    U-Nets' softmax) are averaged. --threshold auto grades the ordinal score with the cut-offs tuned
    on validation (stored in the checkpoint; the mean of the members' for an ensemble); 5
    comma-separated cut-offs override them, 0.5,1.5,2.5,3.5,4.5 rounds the score.

    Examples:

      medchallenge panda predict --checkpoint runs/latest --data . --out predictions --tta

      medchallenge panda predict --checkpoint cv --data .    (the fold models of `panda cv --out cv`)

      medchallenge panda predict --checkpoint runs/unet/best.pt --cache tiles --out pred_masks

      medchallenge panda predict --checkpoint runs/masked --mask-model runs/unet --data .

      medchallenge panda predict --checkpoint best.pt --part 2/4   (then: panda predict --merge-parts)
    """
    from medchallenge.core.errors import OptionError

    if merge_parts:
        from medchallenge.panda.submission import merge_parts as merge

        merge(out, overwrite=overwrite)
        return
    if not checkpoint:
        raise OptionError("--checkpoint is required (only --merge-parts runs without one)")
    from medchallenge.core.checkpoint import expand_checkpoints, load_checkpoint

    checkpoints = expand_checkpoints(checkpoint)
    if load_checkpoint(checkpoints[0], challenge="panda", models=["classifier", "unet"])["model"]["name"] == "unet":
        from medchallenge.panda.segpredict import predict_masks

        if out.suffix == ".csv":
            raise OptionError(f"--out {out}: a U-Net writes a folder of mask tiles, not a CSV")
        if mask_model or threshold.strip().lower() != "auto":
            raise OptionError("--mask-model and --threshold are for classifier checkpoints")
        predict_masks(checkpoints, out, tiles=cache, data=None if cache else data, n_overlays=n_overlays,
                      device=device, batch_size=batch_size, workers=workers, part=part, overwrite=overwrite,
                      tta=tta)
        return
    from medchallenge.panda.submission import predict_submission

    if out.suffix == ".csv":
        raise OptionError(f"--out {out}: --out is a folder (predict writes OUT/submission.csv), e.g. --out {out.parent}")
    predict_submission(checkpoints, out, data=data, tiles=cache, tta=tta, threshold=threshold, device=device,
                       batch_size=batch_size, workers=workers, skip_missing=skip_missing, mask_models=mask_model,
                       part=part, overwrite=overwrite)


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or a folder holding them).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and cases.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with QWK (as the organisers compute it).

    Example: medchallenge panda cv runs/efficientnet-b0-fold* --out cv
    """
    from medchallenge.core.cv import run_cv
    from medchallenge.panda.metrics import cv_score

    run_cv(runs, "panda", cv_score, out, as_json)


Rule = choices("Rule", "pnd", "fixed")


@app.command()
@opt.report_errors
def clean(
    oof: Annotated[Path, typer.Option("--oof", help="A `panda cv` folder (its cases.csv) or an oof.csv.")],
    rule: Annotated[Rule, typer.Option("--rule", help="pnd: per-provider thresholds by ISUP grade (1st place); fixed: --max-diff for all.")] = Rule.pnd,
    max_diff: Annotated[Optional[float], typer.Option("--max-diff", min=0, help="--rule fixed: drop when |isup - oof| exceeds it (1st place: 1.6).")] = None,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for the cleaned train.csv and dropped.csv.")] = Path("clean"),
) -> None:
    """Drop the slides whose ISUP label the out-of-fold score contradicts: OUT/train.csv (cleaned) and OUT/dropped.csv.

    Example: medchallenge panda clean --oof cv --rule pnd --out clean
    """
    from medchallenge.panda.clean import clean_labels

    clean_labels(oof, data, out, rule=rule.value, max_diff=max_diff)


@app.command()
@opt.report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV with image_id,isup_grade[,data_provider] (train.csv or an answer key); with --masks, the tile cache holding the true mask tiles.")],
    predictions: Annotated[Path, typer.Option("--predictions", help="predict's folder (its submission.csv, or all its parts) or a submission CSV (image_id,isup_grade).")] = Path("predictions"),
    masks: Annotated[Optional[Path], typer.Option("--masks", help="Score a mask folder from `panda predict` with a U-Net instead.")] = None,
    subset: Annotated[bool, typer.Option("--subset", help="Score only the submitted ids when the submission covers part of the truth (e.g. a fold of train.csv); without it, a missing id is an error, as in the challenge.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv and plots.")] = Path("evaluation"),
    as_json: opt.JsonOpt = False,
) -> None:
    """Quadratic weighted kappa, accuracy, per-provider QWK and the confusion matrix (table; metrics.json, cases.csv, PNG in --out).

    Every truth id needs a prediction (the challenge's rule) unless --subset. A kappa that is
    undefined (one grade on both sides) is reported as "undefined" (null in JSON), as the
    organisers' scikit-learn call returns NaN.

    With --masks: per-class Dice, tumour Dice and pixel accuracy per provider (cases.csv per slide).

    Examples:

      medchallenge panda evaluate --predictions predictions --truth answers/test_labels.csv --json

      medchallenge panda evaluate --masks pred_masks --truth tiles
    """
    from medchallenge.core.report import write_report
    from medchallenge.panda.metrics import mask_report, submission_report

    report = mask_report(masks, truth) if masks is not None else submission_report(predictions, truth, subset, out)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    if masks is not None:
        _print_mask_scores(report.summary, masks, truth)
    else:
        _print_submission(report.summary, report.n, predictions, truth)
    from medchallenge.core.console import out_console

    out_console.print(f"metrics.json, cases.csv{'' if masks else ' and confusion_matrix.png'} in {out}")


def _print_submission(result: dict, n: int, predictions: Path, truth: Path) -> None:
    from rich.table import Table

    from medchallenge.core.console import out_console
    from medchallenge.panda.metrics import N_GRADES

    scope = f" (--subset: {n} of {result['n_reference']} truth ids scored)" if result["subset"] else ""
    table = Table(title=f"PANDA: {predictions} vs {truth}{scope}")
    for column in ("scope", "n", "QWK", "accuracy"):
        table.add_column(column, justify="right" if column != "scope" else "left")
    table.add_row("all", str(n), _score(result["qwk"]), _score(result["accuracy"]))
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


def _score(value: float, digits: int = 4) -> str:
    """A score for the table, or "undefined" for NaN/None (e.g. kappa with one grade on both sides)."""
    return "undefined" if value is None or value != value else f"{value:.{digits}f}"


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
