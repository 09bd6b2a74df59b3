"""core.cliflags: the shared engine flags on a train command, refused flags, deprecated aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.testing import CliRunner

from medchallenge.core.cliflags import EngineFlags, deprecated_aliases, engine_flags
from medchallenge.core.options import report_errors

app = typer.Typer()
seen: dict = {}


@app.command()
@report_errors
@deprecated_aliases({"--slices": "cache", "--l2": "weight_decay"})
@engine_flags(unsupported={"optimizer": "this toy trains with its own SGD"}, epochs=2, lr=0.5)
def train(
    cache: Annotated[Path, typer.Option("--cache", help="Cache folder.")] = Path("cache"),
    width: Annotated[int, typer.Option("--width")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    *,
    engine: EngineFlags,
) -> None:
    seen.update(cache=cache, width=width, engine=engine, as_json=as_json)


@app.command()
def other() -> None:
    """Keeps the app a group, so `train` is a sub-command as in the real CLI."""


def _run(*args: str):
    seen.clear()
    return CliRunner().invoke(app, ["train", *args])


def test_engine_flags_parse_with_the_challenge_defaults() -> None:
    result = _run("--width", "3", "--accumulate", "2", "--scheduler", "step", "--no-amp")
    assert result.exit_code == 0, result.output
    engine = seen["engine"]
    assert (engine.epochs, engine.lr, engine.accumulate, engine.scheduler, engine.amp) == (2, 0.5, 2, "step", False)
    assert seen["width"] == 3 and seen["cache"] == Path("cache")
    config = engine.config(Path("run"), scheduler="none")
    assert config.scheduler == "none" and config.accumulate == 2 and config.out == Path("run")


def test_choices_are_enums_rejected_before_the_command_runs() -> None:
    result = _run("--scheduler", "poly")
    assert result.exit_code == 2 and "poly" in result.output and not seen


def test_a_flag_the_challenge_cannot_honour_is_refused() -> None:
    result = _run("--optimizer", "adamw")
    assert result.exit_code == 2 and not seen
    assert "--optimizer is not supported here: this toy trains with its own SGD" in result.output


def test_help_groups_the_flags_and_hides_old_names() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    for panel in ("Optimisation", "Hardware", "Run"):
        assert panel in result.output
    assert "--accumulate" in result.output and "--slices" not in result.output


def test_deprecated_alias_still_works_and_says_so() -> None:
    result = _run("--slices", "old")
    assert result.exit_code == 0, result.output
    assert seen["cache"] == Path("old")
    assert "--slices is deprecated" in result.output and "use --cache" in result.output
    both = _run("--slices", "old", "--cache", "new")
    assert both.exit_code == 2 and "both given" in both.output


def test_an_engine_flag_can_have_an_old_name() -> None:
    result = _run("--l2", "0.01")
    assert result.exit_code == 0, result.output
    assert seen["engine"].weight_decay == 0.01 and "--l2 is deprecated" in result.output


def test_string_annotations_keep_their_option_names() -> None:
    """This module uses ``from __future__ import annotations``: ``as_json`` must stay ``--json``."""
    result = _run("--json")
    assert result.exit_code == 0, result.output
    assert seen["as_json"] is True
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--json" in help_text and "--as-json" not in help_text and "Print JSON." in help_text
