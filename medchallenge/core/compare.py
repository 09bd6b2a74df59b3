"""Compare runs: the options that differ, best metric and epoch, time, throughput and memory.

The reports made these tables by hand (backbones, learning rates, transfer setups). A run folder
holds everything needed: config.json (options, optimizer, schedule) and metrics.csv (one row per
epoch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path, write_csv, write_json

# keys that say where or how a run was started, not what it trained
_IGNORED = ("out", "provenance", "version", "world_size", "resume", "command_options", "data")


def read_run(run: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(config.json, metrics.csv) of a run folder; a DataError names what is missing."""
    run = Path(run)
    config_file, metrics_file = run / "config.json", run / "metrics.csv"
    if not config_file.is_file():
        raise DataError(run, "not a run folder (no config.json)")
    if not metrics_file.is_file():
        raise DataError(run, "the run has no finished epoch yet (no metrics.csv)")
    return json.loads(config_file.read_text()), pd.read_csv(metrics_file)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"options": {"depth": 4}}`` → ``{"options.depth": 4}`` (lists kept as text)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if not prefix and key in _IGNORED:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def summarise(run: Path, config: dict[str, Any], metrics: pd.DataFrame) -> dict[str, Any]:
    """Best monitored value and its epoch, epochs done, total time, mean throughput, peak GPU memory."""
    monitor = config.get("monitor")
    best, best_epoch = math.nan, None
    if monitor in metrics and metrics[monitor].notna().any():
        values = metrics[monitor]
        index = values.idxmin() if config.get("monitor_mode") == "min" else values.idxmax()
        best, best_epoch = float(values[index]), int(metrics.loc[index, "epoch"])
    return {
        "run": str(run), "challenge": config.get("challenge"), "monitor": monitor, "best": best,
        "best_epoch": best_epoch, "epochs": int(metrics["epoch"].max()),
        "time_s": float(metrics["time_s"].sum()) if "time_s" in metrics else math.nan,
        "samples_per_s": float(metrics["train_samples_per_s"].mean()) if "train_samples_per_s" in metrics else math.nan,
        "peak_gpu_mem_gb": float(metrics["peak_gpu_mem_gb"].max()) if "peak_gpu_mem_gb" in metrics else math.nan,
    }


def compare_runs(runs: list[Path]) -> tuple[pd.DataFrame, dict[str, list[Any]], dict[str, pd.DataFrame]]:
    """(one summary row per run, {option: value per run} for the options that differ, metrics per run)."""
    if len(runs) < 2:
        raise DataError(None, "compare needs at least two run folders")
    read = {str(run): read_run(run) for run in runs}
    challenges = {config.get("challenge") for config, _ in read.values()}
    if len(challenges) > 1:
        raise DataError(None, f"runs of different challenges ({', '.join(sorted(map(str, challenges)))})")
    flat = [flatten(config) for config, _ in read.values()]
    keys = sorted(set().union(*flat))
    differ = {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1}
    rows = [summarise(Path(run), config, metrics) for run, (config, metrics) in read.items()]
    return pd.DataFrame(rows), differ, {run: metrics for run, (_, metrics) in read.items()}


def write_comparison(out: Path, table: pd.DataFrame, differ: dict[str, list[Any]],
                     curves: dict[str, pd.DataFrame], monitor: str | None) -> None:
    """compare.csv (summary + differing options), compare.json and curves.png (validation curves)."""
    out.mkdir(parents=True, exist_ok=True)
    full = table.copy()
    for key, values in differ.items():
        full[key] = values
    write_csv(out / "compare.csv", full)
    write_json(out / "compare.json", {"runs": full.to_dict(orient="records"), "differing_options": sorted(differ)})
    if monitor is None:
        return
    from medchallenge.core.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, metrics in curves.items():
        if monitor in metrics:
            ax.plot(metrics["epoch"], metrics[monitor], "-o", markersize=3, label=Path(run).name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
