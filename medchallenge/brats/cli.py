"""``medchallenge brats``: sample, tile, train (phases 1 and 2), predict, evaluate (WT/TC/ET Dice)."""


import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core import options as opt
from medchallenge.core.cliflags import EngineFlags, choices, deprecated_aliases, engine_flags
from medchallenge.core.jsonio import dumps_json
from medchallenge.havaei import options as hv

app = opt.challenge_app("BraTS brain-tumour segmentation with TwoPathCNN / InputCascadeCNN (Dice of WT, TC, ET).")

DataOpt = Annotated[Path, typer.Option("--data", help="Folder of BraTS case folders.", rich_help_panel=hv.DATA)]
FromOpt = Annotated[Optional[Path], typer.Option("--from", rich_help_panel="Model",
                                                 help="BraTS checkpoint to start from (phase 2: the phase-1 best.pt).")]
EvalOutOpt = Annotated[Path, typer.Option("--out", help="Folder for metrics.json, cases.csv and plots.")]


class Naming(str, enum.Enum):
    brats2021 = "2021"
    brats2023 = "2023"


Ablation = choices("Ablation", "local", "global")


@app.command()
@opt.report_errors
@deprecated_aliases({"--slices": "n_slices"})
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("brats-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Cases (train + test).")] = 10,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 48,
    n_slices: Annotated[int, typer.Option("--n-slices", min=1, help="Axial slices.")] = 10,
    naming: Annotated[Naming, typer.Option("--naming", help="2021: <case>_flair…, labels 0,1,2,4; 2023: <case>-t2f…,"
                                                            " labels 0,1,2,3.")] = Naming.brats2021,
    seed: opt.SeedOpt = 0,
) -> None:
    """Write synthetic BraTS cases (2021 naming flair, t1, t1ce, t2, seg, or --naming 2023); test segmentations in answers/.

    Example: medchallenge brats sample --out brats-sample --n-cases 10
    """
    from medchallenge.brats.sample import write_sample_dataset
    from medchallenge.core.console import log

    counts = write_sample_dataset(out, n_cases, size, n_slices, seed, naming=naming.name)
    log(f"wrote {counts['train']} training and {counts['test']} test case(s) to {out}")


@app.command()
@opt.report_errors
def check(data: DataOpt = Path("."), as_json: opt.JsonOpt = False, workers: opt.WorkersOpt = 0) -> None:
    """Check the layout (2021 or 2023 naming), headers (size, spacing, direction, voxel type), label values
    and modality/label agreement of every case, reading headers only; exit 2 when tile would stop.

    Example: medchallenge brats check --data BraTS2021 --workers 4
    """
    from medchallenge.brats.check import check_brats
    from medchallenge.core.check import emit

    emit(check_brats(data, workers), as_json)


@app.command()
@opt.report_errors
@deprecated_aliases({"--out": "cache"})
def tile(data: DataOpt = Path("."), cache: Annotated[Path, typer.Option("--cache", help="Patch cache to write.")]
         = Path("patches"), workers: opt.WorkersOpt = 0, part: opt.PartOpt = None, overwrite: opt.OverwriteOpt = False) -> None:
    """Normalise volumes (1st/99th percentile clip, z-score per channel) and index patch centres per label (./patches).

    Example: medchallenge brats tile --workers 4
    """
    from medchallenge.brats.preprocess import tile_brats

    tile_brats(data, cache, workers, part, overwrite)


@app.command()
@opt.report_errors
@deprecated_aliases({"--l2": "weight_decay"})
@engine_flags(unsupported=hv.UNSUPPORTED, **hv.ENGINE_DEFAULTS)
def train(
    cache: hv.CacheOpt = Path("patches"),
    out: hv.RunOutOpt = None,
    model: hv.ModelOpt = hv.Architecture.twopath,
    phase: hv.PhaseOpt = 1,
    from_checkpoint: FromOpt = None,
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
    """Train on patches: phase 1 equiprobable, phase 2 (--from) natural with only the output layer (./runs/...).

    Example: medchallenge brats train --model twopath --phase 1 ; medchallenge brats train --phase 2 --from runs/twopath-phase1-*/best.pt
    """
    from medchallenge.brats.train import BratsTrainer, HavaeiOptions

    out = out or engine.run_dir(f"{model.value}-phase{phase}")
    options = HavaeiOptions(cache, model.value, phase, from_checkpoint, patches_per_epoch, dropout, 2, l1,
                            momentum_start, momentum_end, lr_decay, val_max_cases=val_max_cases, mirror=mirror)
    BratsTrainer(engine.config(out), options).fit()


@app.command()
@opt.report_errors
def predict(
    checkpoint: opt.CheckpointsOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for <case>.nii.gz.")] = Path("predictions"),
    tta: opt.TtaOpt = False,  # mirroring: each slice as is, flipped left-right, up-down and both (4× the compute)
    batch_size: opt.BatchSizeOpt = 8,
    device: opt.DeviceOpt = "auto",
    part: opt.PartOpt = None,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Segment every case, whole slices in one pass, into <case>.nii.gz (labels in the input's convention:
    {0,1,2,4} for <case>_flair naming, {0,1,2,3} for <case>-t2f naming; background outside the brain).

    Several --checkpoint (or a cv folder) average their softmax (an ensemble); --tta adds mirrored slices.

    Example: medchallenge brats predict --checkpoint runs/latest --out predictions --tta
    """
    from medchallenge.brats.predict import predict_brats

    predict_brats(checkpoint, data, out, device, batch_size, part, overwrite, tta=tta)


@app.command()
@opt.report_errors
def cv(runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (or runs/<glob>).")],
       out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and oof.csv.")] = Path("cv"),
       as_json: opt.JsonOpt = False) -> None:
    """Pool the out-of-fold predictions of the fold runs and score them with the challenge's metric
    (per-case WT/TC/ET Dice averaged over cases; mean_dice = their mean).

    Example: medchallenge brats cv runs/twopath-phase1-fold* --out cv
    """
    from medchallenge.brats.metrics import cv_score
    from medchallenge.core.cv import run_cv

    run_cv(runs, "brats", cv_score, out, as_json)


@app.command()
@opt.report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="Folder of <case>/<case>_seg.nii[.gz] (2021) or <case>/<case>-seg.nii.gz (2023).")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of <case>.nii.gz.")] = Path("predictions"),
    out: EvalOutOpt = Path("evaluation"),
    ablate: Annotated[Optional[Ablation], typer.Option("--ablate", help="Remove that path at test time and report the drop (needs --checkpoint, --data).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Model for --ablate.")] = None,
    data: DataOpt = Path("."),
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Dice of whole tumour, tumour core and enhancing tumour (2021 labels {1,2,4}, {1,4}, {4}; 2023 {1,2,3}, {1,3}, {3}).

    Writes metrics.json, cases.csv and dice_per_region.png into --out (default ./evaluation).
    Example: medchallenge brats evaluate --predictions predictions --truth answers --json
    """
    if ablate is not None:
        _ablate(ablate.value, checkpoint, data, truth, out, device, as_json)
        return
    from medchallenge.brats.predict import evaluate_brats
    from medchallenge.core.console import out_console
    from medchallenge.core.report import write_report

    report = evaluate_brats(predictions, truth)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
        return
    from rich.table import Table

    table = Table(title=f"BraTS: {predictions} vs {truth}")
    for column in ("case", "WT", "TC", "ET"):
        table.add_column(column)
    for row in report.summary["cases"]:
        table.add_row(row["case"], *(f"{row[k]:.4f}" for k in ("wt_dice", "tc_dice", "et_dice")))
    table.add_row("mean", *(f"{report.summary[k]:.4f}" for k in ("wt_dice", "tc_dice", "et_dice")))
    out_console.print(table)


def _ablate(path_name: str, checkpoint: Path | None, data: Path, truth: Path, out: Path, device: str,
            as_json: bool) -> None:
    """``evaluate --ablate``: intact against ablated scores, printed and written to OUT/ablation.json."""
    from medchallenge.brats.predict import ablation_study
    from medchallenge.core.console import out_console
    from medchallenge.core.errors import OptionError
    from medchallenge.core.io import write_json

    if checkpoint is None:
        raise OptionError("--ablate needs --checkpoint (and --data with the images)")
    study = ablation_study(checkpoint, data, truth, path_name, device)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ablation.json", study)
    if as_json:
        typer.echo(dumps_json(study))
        return
    for key in ("wt_dice", "tc_dice", "et_dice"):
        v = study[key]
        out_console.print(f"{key}: intact {v['intact']:.4f}, without the {path_name} path {v['ablated']:.4f}"
                          f" (drop {v['drop']:.4f})")
