"""End-to-end `train` throughput of every challenge through the real CLI: ours vs the seed report's way.

    .venv/bin/python bench/train_e2e.py --challenge all --device cpu --scale small
    .venv/bin/python bench/train_e2e.py --challenge panda --device cuda --scale real --repeats 3

For each challenge: `medchallenge <c> sample` (sizes per --scale), `tile`, then `medchallenge <c> train`
in a subprocess twice per repeat, alternating: **seed** (the report's way: --no-amp, the report's batch
size, no channels_last, --workers 0: no report names a worker count, so PyTorch's default, the main
process) and **ours** (the defaults plus what we recommend on the device: --amp --channels-last and
worker processes on CUDA). Both runs share the data, the model and every other option, so the ratio is
the cost of the seed's habits alone. From RUN/metrics.csv: items/s of the last epoch (the first pays
start-up: cudnn autotune, worker start, page cache), data_wait_share, epoch time, peak GPU memory; from
os.wait4: the peak RSS of the largest process (the main process or a loader worker: ru_maxrss is a max,
not a sum). Prints one JSON object (and --json-out FILE). Units: items are slides (panda), slices
(kits), patches (brats, lits, midog), images of the bags (lympho).

small = what a 2-core CPU finishes in about a minute per challenge; real = the issue's sizes (PANDA
36×256 tiles, KiTS 512² slices, BraTS/LiTS 33 px patches of 240×240 slices (--brats-model inputcascade:
65 px), MIDOG 512 px patches, lymphocytosis 150-200-image bags): for the GPU machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHALLENGES = ("panda", "kits", "brats", "lits", "midog", "lympho")


@dataclass(frozen=True)
class Spec:
    """How one challenge is prepared and trained; lists are CLI arguments, dicts are keyed by scale/device."""

    unit: str
    sample: dict[str, list[str]]
    tile: dict[str, list[str]]
    train: dict[str, list[str]]
    seed_batch: int  # the report's batch size
    seed_note: str
    ours_batch: dict[str, int] = field(default_factory=dict)  # by device; absent: the CLI default
    cache: str = "cache"


SPECS: dict[str, Spec] = {
    "panda": Spec(
        "slides",
        {"small": ["--n-slides", "10", "--size", "1024"], "real": ["--n-slides", "64", "--size", "6144"]},
        {"small": ["--level", "1", "--n-tiles", "8", "--tile-size", "32"],
         "real": ["--level", "1", "--n-tiles", "36", "--tile-size", "256"]},
        {"small": ["--model", "efficientnet-b0", "--no-pretrained", "--val-fraction", "0.25"],
         "real": ["--model", "efficientnet-b0", "--no-pretrained", "--val-fraction", "0.25"]},
        2, "report 000: EfficientNet-B0, Adam, batch size 2, fp32", {"cpu": 8, "cuda": 16}, "tiles"),
    "kits": Spec(
        "slices",
        {"small": ["--n-cases", "5", "--size", "64"], "real": ["--n-cases", "10", "--size", "512"]},
        {"small": [], "real": []},
        {"small": ["--patch-size", "64", "--depth", "3", "--width", "8"], "real": ["--patch-size", "512"]},
        4, "report 001: 2D U-Net on 512² slices, batch_size = 4, fp32", {"cpu": 8, "cuda": 16}, "slices"),
    "brats": Spec(
        "patches",
        {"small": ["--n-cases", "5", "--size", "48", "--n-slices", "6"],
         "real": ["--n-cases", "8", "--size", "240", "--n-slices", "155"]},
        {"small": [], "real": []},
        {"small": ["--patches-per-epoch", "256", "--val-max-cases", "1"],
         "real": ["--patches-per-epoch", "65536", "--val-max-cases", "1"]},
        128, "report 002 names no batch size: Havaei et al.'s 128 (the CLI default), fp32",
        {"cpu": 256, "cuda": 512}, "patches"),
    "lits": Spec(
        "patches",
        {"small": ["--n-cases", "5", "--size", "48", "--n-slices", "6"],
         "real": ["--n-cases", "8", "--size", "240", "--n-slices", "155"]},
        {"small": [], "real": []},
        {"small": ["--transfer", "none", "--patches-per-epoch", "256", "--val-max-cases", "1"],
         "real": ["--transfer", "none", "--patches-per-epoch", "65536", "--val-max-cases", "1"]},
        128, "report 002 (LiTS by transfer) names no batch size: 128 as BraTS, fp32",
        {"cpu": 256, "cuda": 512}, "patches"),
    "midog": Spec(
        "patches",
        {"small": ["--n-images", "6", "--size", "384"], "real": ["--n-images", "16", "--size", "2048"]},
        {"small": [], "real": []},
        {"small": ["--model", "resnet18", "--no-pretrained", "--patch-size", "96", "--patches-per-image", "6",
                   "--val-fraction", "0.25"],
         "real": ["--model", "resnet50", "--no-pretrained", "--patch-size", "512", "--patches-per-image", "10",
                  "--val-fraction", "0.25"]},
        30, "report 003: RetinaNet, 512 px patches, batch size 30, fp32 (A100)", {"cpu": 12, "cuda": 30}, "tiles"),
    "lympho": Spec(
        "images",  # the engine counts a batch's images (its bags' cells), not its bags
        {"small": ["--n-patients", "12", "--min-bag", "6", "--max-bag", "10"],
         "real": ["--n-patients", "48", "--min-bag", "150", "--max-bag", "200"]},
        {"small": ["--crop", "32"], "real": ["--crop", "112"]},
        {"small": ["--model", "mean", "--no-pretrained", "--val-fraction", "0.25"],
         "real": ["--model", "mean", "--no-pretrained", "--val-fraction", "0.25"]},
        1, "report 004 names no batch size: one bag (patient) per step, fp32", {}, "cache"),
}


def cli(python: str) -> list[str]:
    """The command that runs the medchallenge CLI with this interpreter."""
    return [python, "-m", "medchallenge"]


def run_measured(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run ``cmd`` (stdout+stderr to ``log``); wall seconds, exit code and peak RSS (GB) of the largest process."""
    env = {**os.environ, "MEDCHALLENGE_PLAIN": "1", "PYTHONUNBUFFERED": "1"}
    root = str(Path(__file__).resolve().parents[1])  # importable from a fresh clone without an install
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3)}  # ru_maxrss: KiB on Linux


def checked(result: dict, what: str, log: Path) -> dict:
    """``result`` if the command succeeded, else raise with the log's tail."""
    if result["rc"] != 0:
        tail = log.read_text(errors="replace").splitlines()[-6:]
        raise RuntimeError(f"{what} failed (exit {result['rc']}, log {log}): " + " | ".join(tail))
    return result


def prepare(challenge: str, scale: str, python: str, work: Path, workers: int) -> Path:
    """Sample and tile ``challenge`` into ``work/<challenge>`` (skipped when already there); the dataset folder."""
    spec = SPECS[challenge]
    data = work / challenge
    log = work / f"{challenge}.log"
    if (data / ".bench-ready").is_file():
        return data
    if data.exists():
        shutil.rmtree(data)
    work.mkdir(parents=True, exist_ok=True)
    checked(run_measured([*cli(python), challenge, "sample", "--out", str(data), *spec.sample[scale]], work, log),
            "sample", log)
    tile = [*cli(python), challenge, "tile", "--cache", spec.cache, "--workers", str(workers), *spec.tile[scale]]
    checked(run_measured(tile, data, log), "tile", log)
    (data / ".bench-ready").write_text(scale)
    return data


def variant_args(challenge: str, variant: str, device: str, workers: int) -> list[str]:
    """The options that differ between the seed's way and ours (everything else is shared)."""
    spec = SPECS[challenge]
    if variant == "seed":
        return ["--no-amp", "--batch-size", str(spec.seed_batch), "--workers", "0"]
    args = ["--amp", "--workers", str(workers)]
    if device == "cuda":
        args.append("--channels-last")  # on the CPU channels_last only slows the convolutions
    if device in spec.ours_batch:
        args += ["--batch-size", str(spec.ours_batch[device])]
    return args


def read_metrics(run: Path) -> list[dict]:
    """RUN/metrics.csv as a list of rows of floats (empty cells: None)."""
    with (run / "metrics.csv").open() as handle:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(handle)]


def midog_count_factor(run: Path, train_args: list[str]) -> float:
    """True patches / patches the engine counted in a MIDOG epoch.

    core.engine.steplog.batch_len takes the leading size of the first tensor it finds; a detection
    batch is (list of 3×P×P images, list of targets), so each batch counts as 3 samples, whatever its
    size. The true count is patches-per-image × training images (RUN/split.json, RUN/train.log).
    """
    text = (run / "train.log").read_text()
    n_train = len(json.loads((run / "split.json").read_text())["train"])
    n_batches = int(re.search(r"(\d+) batches per epoch", text).group(1))
    per_image = int(train_args[train_args.index("--patches-per-image") + 1])
    return per_image * n_train / (3 * n_batches)


def train_once(challenge: str, variant: str, args: argparse.Namespace, data: Path, seed: int) -> dict:
    """One `train` run; items/s etc. of its last epoch, the process's wall time and peak RSS."""
    spec = SPECS[challenge]
    run = data / "runs" / f"{variant}-{seed}"
    if run.exists():
        shutil.rmtree(run)
    extra = ["--model", args.brats_model] if challenge in ("brats", "lits") else []
    cmd = [*cli(args.python), challenge, "train", "--cache", spec.cache, "--out", str(run), "--device", args.device,
           "--epochs", str(args.epochs), "--seed", str(seed), *spec.train[args.scale], *extra,
           *variant_args(challenge, variant, args.device, args.workers)]
    log = data.parent / f"{challenge}.log"
    proc = checked(run_measured(cmd, data, log), f"{challenge} train ({variant})", log)
    rows = read_metrics(run)
    if challenge == "midog":  # the engine's batch_len counts a detection batch as 3 (see midog_count_factor)
        factor = midog_count_factor(run, spec.train[args.scale])
        for row in rows:
            row["train_samples_per_s"] = row["train_samples_per_s"] * factor
    last = rows[-1]
    return {"items_per_s": last.get("train_samples_per_s"), "first_epoch_items_per_s": rows[0].get("train_samples_per_s"),
            "data_wait_share": last.get("data_wait_share"), "epoch_s": last.get("time_s"),
            "peak_gpu_mem_gb": last.get("peak_gpu_mem_gb"), "peak_rss_gb": proc["peak_rss_gb"],
            "process_wall_s": proc["wall_s"], "options": variant_args(challenge, variant, args.device, args.workers)}


def summarise(runs: list[dict]) -> dict:
    """Mean (± sd over repeats) of each number of ``runs``; options of the first."""
    out: dict = {"options": " ".join(runs[0]["options"]), "repeats": len(runs)}
    for key in ("items_per_s", "first_epoch_items_per_s", "data_wait_share", "epoch_s", "peak_gpu_mem_gb",
                "peak_rss_gb", "process_wall_s"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = round(statistics.fmean(values), 4)
            if len(values) > 1:
                out[key + "_sd"] = round(statistics.stdev(values), 4)
    return out


def bench_challenge(challenge: str, args: argparse.Namespace, work: Path) -> dict:
    """Prepare, then train seed/ours alternately ``args.repeats`` times; the challenge's JSON entry."""
    spec = SPECS[challenge]
    data = prepare(challenge, args.scale, args.python, work, args.workers)
    runs: dict[str, list[dict]] = {"seed": [], "ours": []}
    for k in range(args.repeats):
        order = ("seed", "ours") if k % 2 == 0 else ("ours", "seed")  # alternate: load drift hits both
        for variant in order:
            runs[variant].append(train_once(challenge, variant, args, data, args.seed + k))
    ratios = [o["items_per_s"] / s["items_per_s"] for o, s in zip(runs["ours"], runs["seed"]) if s["items_per_s"]]
    entry = {"unit": spec.unit, "seed_way": spec.seed_note, "seed": summarise(runs["seed"]),
             "ours": summarise(runs["ours"]), "ratio_items_per_s": round(statistics.fmean(ratios), 3) if ratios else None}
    if len(ratios) > 1:
        entry["ratio_sd"] = round(statistics.stdev(ratios), 3)
    if challenge in ("brats", "lits"):
        entry["model"] = args.brats_model
    return entry


def machine(python: str) -> dict:
    """Machine, versions, date and load average, for the table's header."""
    probe = ("import json,torch,torchvision,sys;print(json.dumps({'python':sys.version.split()[0],"
             "'torch':torch.__version__,'torchvision':torchvision.__version__,"
             "'gpu':torch.cuda.get_device_name() if torch.cuda.is_available() else None}))")
    versions = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], **versions}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--challenge", choices=(*CHALLENGES, "all"), default="all")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--scale", choices=("small", "real"), default="small")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is reported")
    parser.add_argument("--repeats", type=int, default=1, help="seed/ours pairs, alternating order, seeds --seed+k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="ours' loader workers (default: 2 CPU, 8 CUDA)")
    parser.add_argument("--brats-model", choices=("twopath", "inputcascade"), default="twopath")
    parser.add_argument("--work", type=Path, default=None, help="keep the data here (reused by predict_e2e.py)")
    return parse_common(parser, argv)


def parse_common(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options both e2e benches end with (--json-out, --python, --threads), parsed and applied."""
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the CLI")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/MKL threads of every run (both variants); 1 on an oversubscribed CPU")
    args = parser.parse_args(argv)
    if args.threads:  # inherited by the CLI subprocesses: torch reads it at start-up
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.workers is None:
        args.workers = 8 if args.device == "cuda" else 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="train_e2e-"))
    chosen = CHALLENGES if args.challenge == "all" else (args.challenge,)
    result: dict = {"bench": "train_e2e", "device": args.device, "scale": args.scale, "epochs": args.epochs,
                    "threads": args.threads, "machine": machine(args.python), "challenges": {}}
    run_all(chosen, bench_challenge, args, work, result)


def run_all(chosen: Sequence[str], bench: Callable[[str, argparse.Namespace, Path], dict], args: argparse.Namespace,
            work: Path, result: dict) -> None:
    """Both benches' loop: each challenge in turn (one failing keeps the others' numbers), a line per
    challenge on stderr as it ends, then the whole JSON on stdout (and ``--json-out``)."""
    for challenge in chosen:
        try:
            result["challenges"][challenge] = bench(challenge, args, work)
        except RuntimeError as error:
            result["challenges"][challenge] = {"error": str(error)}
        print(json.dumps({challenge: result["challenges"][challenge]}), file=sys.stderr, flush=True)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
