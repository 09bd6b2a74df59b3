"""The root command: composes the challenge apps and reports the version.

Each challenge package exports ``app`` from its ``cli`` module; only challenges that work end to
end are mounted here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from medchallenge import __version__

CHALLENGES: dict[str, str] = {
    "panda": "PANDA prostate ISUP grading from whole-slide images (quadratic weighted kappa).",
    "kits": "KiTS19 kidney and kidney-tumour CT segmentation (kidney and tumour Dice).",
    "brats": "BraTS brain-tumour segmentation, TwoPathCNN / InputCascadeCNN (Dice of WT, TC, ET).",
    "lits": "LiTS liver-tumour CT segmentation by transfer from brats (liver and tumour Dice).",
    "midog": "MIDOG 2021 mitosis detection with RetinaNet (F1 of 30 px matching).",
    "lympho": "Lymphocytosis diagnosis by multi-instance learning with clinical data (balanced accuracy).",
}

app = typer.Typer(
    help="Medical-imaging challenges from raw data to a scored submission: sample, tile, train, predict, evaluate.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medchallenge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Medical-imaging challenges from raw data to a scored submission."""


@app.command("env")
def env(as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables.")) -> None:
    """Print the environment (versions, commit, devices) and where pretrained weights are looked for."""
    from medchallenge.core.jsonio import dumps_json
    from medchallenge.core.provenance import environment, pretrained_files

    record, weights = environment(), pretrained_files()
    if as_json:
        typer.echo(dumps_json({**record, "pretrained": weights}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("what", "value", title="medchallenge environment")
    for key, value in record.items():
        if key == "libraries":
            for name, version in value.items():
                table.add_row(name, version or "[red]not installed[/red]")
        elif key == "gpus":
            for gpu in value:
                table.add_row(f"GPU {gpu['index']}", f"{gpu['name']} ({gpu['memory_gb']} GB)")
        else:
            table.add_row(key, str(value))
    console.print(table)
    found = Table("model", "file", "present", title="pretrained weights (never downloaded)")
    for row in weights:
        found.add_row(row["model"], row["file"], "yes" if row["present"] else "[yellow]no[/yellow]")
    console.print(found)


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Run folders (two or more) of one challenge."),
    out: Path = typer.Option(Path("compare"), "--out", help="Folder for compare.csv, compare.json and curves.png."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare runs: options that differ, best metric and epoch, time, throughput, peak memory; one curve plot."""
    from medchallenge.core.compare import compare_runs, write_comparison
    from medchallenge.core.errors import MedchallengeError
    from medchallenge.core.jsonio import dumps_json

    try:
        table, differ, curves = compare_runs(runs)
    except MedchallengeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    monitor = table["monitor"].iloc[0]
    write_comparison(out, table, differ, curves, monitor)
    if as_json:
        typer.echo(dumps_json({"runs": table.to_dict(orient="records"), "differing_options": differ}))
        return
    _print_comparison(table, differ, out)


def _print_comparison(table, differ, out: Path) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    def num(value: float, fmt: str) -> str:
        return "-" if value != value else format(value, fmt)  # NaN: not recorded (e.g. no GPU)

    view = Table("run", *differ, "best " + str(table["monitor"].iloc[0]), "epoch", "time", "samples/s", "GPU GB")
    for i, row in table.iterrows():
        view.add_row(Path(row["run"]).name, *(str(v[i]) for v in differ.values()), num(row["best"], ".4g"),
                     str(row["best_epoch"]), num(row["time_s"], ".0f") + "s", num(row["samples_per_s"], ".1f"),
                     num(row["peak_gpu_mem_gb"], ".2f"))
    Console().print(view)
    Console(stderr=True).print(f"compare.csv, compare.json and curves.png in {out}")


# every challenge lists its verbs in the order of the pipeline, then its own extras
VERB_ORDER = ("sample", "check", "tile", "train", "predict", "evaluate", "cv")


def _verb_rank(command: typer.models.CommandInfo) -> int:
    name = command.name or command.callback.__name__  # type: ignore[union-attr]
    return VERB_ORDER.index(name) if name in VERB_ORDER else len(VERB_ORDER)


for _key, _help in CHALLENGES.items():
    _sub = importlib.import_module(f"medchallenge.{_key}.cli").app
    _sub.registered_commands.sort(key=_verb_rank)  # stable: extras keep their own order
    app.add_typer(_sub, name=_key, help=_help)


def main() -> None:
    """Console-script entry point."""
    app()
