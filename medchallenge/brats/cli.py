"""``medchallenge brats``: sample, tile, train (phases 1 and 2), predict, evaluate (WT/TC/ET Dice)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medchallenge.core.jsonio import dumps_json
from medchallenge.core.options import (
    AmpOpt,
    BatchSizeOpt,
    CheckpointOpt,
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
    WorkersOpt,
    challenge_app,
    report_errors,
)

app = challenge_app("BraTS brain-tumour segmentation with TwoPathCNN / InputCascadeCNN (Dice of WT, TC, ET).")

ModelOpt = Annotated[str, typer.Option("--model", help="twopath or inputcascade.")]
PhaseOpt = Annotated[int, typer.Option("--phase", help="1: equiprobable labels; 2: natural, only the output layer trains.")]
FromOpt = Annotated[Optional[Path], typer.Option("--from", help="Checkpoint to start from (phase 2: the phase-1 best.pt).")]
PatchesOpt = Annotated[int, typer.Option("--patches-per-epoch", min=1, help="Random patches per epoch.")]
MomentumStartOpt = Annotated[float, typer.Option("--momentum-start", help="SGD momentum at the first epoch.")]
MomentumEndOpt = Annotated[float, typer.Option("--momentum-end", help="SGD momentum at the last epoch.")]
LrDecayOpt = Annotated[float, typer.Option("--lr-decay", help="Learning-rate factor per epoch.")]
DropoutOpt = Annotated[float, typer.Option("--dropout", help="Dropout before the output layer.")]
L1Opt = Annotated[float, typer.Option("--l1", help="L1 penalty on the weights.")]
L2Opt = Annotated[float, typer.Option("--l2", help="L2 penalty (weight decay).")]
ClipOpt = Annotated[float, typer.Option("--grad-clip", help="Gradient norm clip (0: off).")]


def train_command(challenge: str, cache: Path, out: Path | None, model: str, phase: int, from_checkpoint: Path | None,
                  epochs: int, batch_size: int, lr: float, patches_per_epoch: int, momentum_start: float,
                  momentum_end: float, lr_decay: float, dropout: float, l1: float, l2: float, grad_clip: float,
                  device: str, workers: int, seed: int, amp: bool, resume: bool, **extra: object) -> dict:
    """The shared body of ``brats train`` and ``lits train``."""
    from medchallenge.core.engine import TrainConfig

    out = out or Path("runs") / f"{model}-phase{phase}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(out=out, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=l2,
                         grad_clip=grad_clip or None, device=device, workers=workers, seed=seed, amp=amp,
                         resume=resume)
    if challenge == "brats":
        from medchallenge.brats.train import HavaeiOptions, HavaeiTrainer

        trainer = HavaeiTrainer(config, HavaeiOptions(cache, model, phase, from_checkpoint, patches_per_epoch, dropout,
                                                      2, l1, momentum_start, momentum_end, lr_decay))
    else:
        from medchallenge.lits.train import LitsOptions, LitsTrainer

        trainer = LitsTrainer(config, LitsOptions(cache, model, phase, from_checkpoint, patches_per_epoch, dropout, 2,
                                                  l1, momentum_start, momentum_end, lr_decay,
                                                  transfer=str(extra["transfer"])))
    result = trainer.fit()
    typer.echo(f"best validation mean Dice {result['best']['mean_dice']}: {out / 'best.pt'}", err=True)
    return result


@app.command()
@report_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic dataset into.")] = Path("brats-sample"),
    n_cases: Annotated[int, typer.Option("--n-cases", min=3, help="Cases (train + test).")] = 10,
    size: Annotated[int, typer.Option("--size", min=32, help="In-plane size, px.")] = 48,
    n_slices: Annotated[int, typer.Option("--slices", min=1, help="Axial slices.")] = 10,
    seed: SeedOpt = 0,
) -> None:
    """Write synthetic BraTS cases (2021 naming flair, t1, t1ce, t2, seg); test segmentations in answers/.

    Example: medchallenge brats sample --out brats-sample --n-cases 10
    """
    from medchallenge.brats.sample import write_sample_dataset
    from medchallenge.core.console import log

    counts = write_sample_dataset(out, n_cases, size, n_slices, seed)
    log(f"wrote {counts['train']} training and {counts['test']} test case(s) to {out}")


@app.command()
@report_errors
def tile(data: DataOpt = Path("."), out: OutOpt = None, workers: WorkersOpt = 0, part: PartOpt = None,
         overwrite: OverwriteOpt = False) -> None:
    """Normalise volumes (1st/99th percentile clip, z-score per channel) and index patch centres per label (./patches).

    Example: medchallenge brats tile --workers 4
    """
    from medchallenge.brats.preprocess import tile_brats

    tile_brats(data, out or Path("patches"), workers, part, overwrite)


@app.command()
@report_errors
def train(
    cache: Annotated[Path, typer.Option("--cache", help="Patch cache from `brats tile`.")] = Path("patches"),
    out: OutOpt = None,
    model: ModelOpt = "twopath",
    phase: PhaseOpt = 1,
    from_checkpoint: FromOpt = None,
    epochs: EpochsOpt = 10,
    batch_size: BatchSizeOpt = 128,
    lr: LrOpt = 0.005,
    patches_per_epoch: PatchesOpt = 10_000,
    momentum_start: MomentumStartOpt = 0.5,
    momentum_end: MomentumEndOpt = 0.9,
    lr_decay: LrDecayOpt = 0.9,
    dropout: DropoutOpt = 0.2,
    l1: L1Opt = 1e-6,
    l2: L2Opt = 1e-4,
    grad_clip: ClipOpt = 1.0,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 2,
    seed: SeedOpt = 0,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
) -> None:
    """Train on patches: phase 1 equiprobable, phase 2 (--from) natural with only the output layer (./runs/...).

    Example: medchallenge brats train --model twopath --phase 1 ; medchallenge brats train --phase 2 --from runs/twopath-phase1-*/best.pt
    """
    train_command("brats", cache, out, model, phase, from_checkpoint, epochs, batch_size, lr, patches_per_epoch,
                  momentum_start, momentum_end, lr_decay, dropout, l1, l2, grad_clip, device, workers, seed, amp, resume)


@app.command()
@report_errors
def predict(
    checkpoint: CheckpointOpt,
    data: DataOpt = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for <case>.nii.gz.")] = Path("predictions"),
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    part: PartOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment every case, whole slices in one pass, into <case>.nii.gz (labels in the input's convention:
    {0,1,2,4} for <case>_flair naming, {0,1,2,3} for <case>-t2f naming; background outside the brain).

    Example: medchallenge brats predict --checkpoint runs/twopath-phase2-*/best.pt --out predictions
    """
    from medchallenge.brats.predict import predict_brats

    predict_brats(checkpoint, data, out, device, batch_size, part, overwrite)


@app.command()
@report_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="Folder of <case>/<case>_seg.nii[.gz] (2021) or <case>/<case>-seg.nii.gz (2023).")],
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of <case>.nii.gz.")] = Path("predictions"),
    ablate: Annotated[Optional[str], typer.Option("--ablate", help="local or global: remove that path at test time and report the drop (needs --checkpoint, --data).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Model for --ablate.")] = None,
    data: DataOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Dice of whole tumour, tumour core and enhancing tumour (2021 labels {1,2,4}, {1,4}, {4}; 2023 {1,2,3}, {1,3}, {3}).

    Example: medchallenge brats evaluate --predictions predictions --truth answers --json
    """
    from medchallenge.brats.predict import ablation_study, evaluate_brats
    from medchallenge.core.console import out_console
    from medchallenge.core.errors import OptionError

    if ablate is not None:
        if checkpoint is None:
            raise OptionError("--ablate needs --checkpoint (and --data with the images)")
        study = ablation_study(checkpoint, data, truth, ablate)
        if as_json:
            typer.echo(dumps_json(study))
        else:
            for key in ("wt_dice", "tc_dice", "et_dice"):
                v = study[key]
                out_console.print(f"{key}: intact {v['intact']:.4f}, without the {ablate} path {v['ablated']:.4f}"
                                  f" (drop {v['drop']:.4f})")
        return
    result = evaluate_brats(predictions, truth)
    if as_json:
        typer.echo(dumps_json(result))
        return
    from rich.table import Table

    table = Table(title=f"BraTS: {predictions} vs {truth}")
    for column in ("case", "WT", "TC", "ET"):
        table.add_column(column)
    for row in result["cases"]:
        table.add_row(row["case"], *(f"{row[k]:.4f}" for k in ("wt_dice", "tc_dice", "et_dice")))
    table.add_row("mean", *(f"{result[k]:.4f}" for k in ("wt_dice", "tc_dice", "et_dice")))
    out_console.print(table)
