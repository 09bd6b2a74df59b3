"""End-to-end `predict` speed of every challenge through the real CLI: ours vs the seed report's way.

    .venv/bin/python bench/predict_e2e.py --challenge all --device cpu --scale small
    .venv/bin/python bench/predict_e2e.py --challenge kits --device cuda --scale real --kits-slices 611
    .venv/bin/python bench/predict_e2e.py --challenge midog --device cuda --scale real --midog-size 7215

Per challenge: the data of bench/train_e2e.py (same --scale; --work reuses its folder and its
runs/ours-<seed>/best.pt, else one short `train` makes a checkpoint: speed does not depend on the
weights), then `medchallenge <c> predict` in a subprocess, each variant --repeats times, alternating:
- **ours**: the CLI as shipped (bf16/fp16 autocast on CUDA, batches of whole slices/patches);
- **seed**: the same CLI with the report's batch size and fp32 (amp_dtype patched to None before the
  CLI is imported; on the CPU both are fp32), and, where the report classified patches one at a time,
  that loop in-process on the same input size: BraTS/LiTS one 33/65 px patch per voxel (timed on
  --patch-pixels voxels of a slice, extrapolated to the volume, fp32), MIDOG one 512 px patch at a
  time after decoding the whole image (--naive-patches timed, extrapolated).
Both CLI variants run through this file's --exec wrapper, which times the CLI after its imports
(run_s, without the interpreter's start-up), the MIDOG NMS calls inside it (nms_s) and the peak GPU
memory; os.wait4 gives the peak RSS. At --scale real the inputs are the issue's sizes: KiTS a
--kits-slices×512×512 CT case, BraTS/LiTS 240×240×155 volumes, MIDOG a --midog-size image (height
0.75×), PANDA 6144² slides, lymphocytosis 150-200-image bags. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_e2e as te  # noqa: E402  (bench/ is no package)

# the report's batch size at predict time (PANDA: its training batch; KiTS: its batch_size = 4)
SEED_PREDICT_BATCH = {"panda": 2, "kits": 4, "brats": 128, "lits": 128, "midog": 1, "lympho": 1}
PER_PATCH = {"brats", "lits", "midog"}  # the report classified/detected one patch at a time


def exec_wrapped(argv: list[str]) -> None:
    """``--exec STATS [--fp32] -- ARGS``: run the medchallenge CLI with ARGS, writing timings to STATS (JSON)."""
    stats_path, rest = Path(argv[0]), argv[1:]
    fp32 = rest[0] == "--fp32"
    args = rest[rest.index("--") + 1 :]
    started = time.perf_counter()
    import medchallenge.core.device as device_mod

    if fp32:  # the seed's way: no autocast; patched before any challenge module binds the name
        device_mod.amp_dtype = lambda device, enabled=True: None  # type: ignore[assignment]
    import medchallenge.midog.nms as nms_mod

    nms_time = {"s": 0.0, "calls": 0, "points": 0}
    original = nms_mod.nms_by_distance

    def timed_nms(points, *a, **k):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return original(points, *a, **k)
        finally:
            nms_time["s"] += time.perf_counter() - t0
            nms_time["calls"] += 1
            nms_time["points"] += len(points)

    nms_mod.nms_by_distance = timed_nms
    from medchallenge.cli import app

    imported = time.perf_counter()
    code = 0
    try:
        app(args, prog_name="medchallenge")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    import torch

    _sync(torch)
    done = time.perf_counter()
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    stats_path.write_text(json.dumps({"import_s": imported - started, "run_s": done - imported, "nms_s": nms_time["s"],
                                      "nms_calls": nms_time["calls"], "nms_points": nms_time["points"],
                                      "peak_gpu_mem_gb": gpu}))
    sys.exit(code)


def _sync(torch) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def checkpoint(challenge: str, args: argparse.Namespace, data: Path) -> Path:
    """train_e2e's ours run's best.pt when there, else one short ours `train` (1 epoch)."""
    best = data / "runs" / f"ours-{args.seed}" / "best.pt"
    if best.is_file():
        return best
    train_args = argparse.Namespace(**{**vars(args), "epochs": 1})
    te.train_once(challenge, "ours", train_args, data, args.seed)
    return best


def test_ids(answers_json: Path) -> str:
    """The comma-separated image ids of a MIDOG answer key."""
    return ",".join(str(i["id"]) for i in json.loads(answers_json.read_text())["images"])


def sample_value(challenge: str, scale: str, flag: str, default: int) -> int:
    """The value of ``flag`` in train_e2e's sample arguments of ``challenge`` at ``scale``."""
    args = te.SPECS[challenge].sample[scale]
    return int(args[args.index(flag) + 1]) if flag in args else default


def big_kits_case(data: Path, slices: int, size: int) -> str:
    """Write a ``slices``×``size``×``size`` CT case 300 (random HU, no labels) into the KiTS data; its --cases."""
    import numpy as np

    from medchallenge.kits.sample import write_case

    folder = data / "data" / "case_00300"
    if not (folder / "imaging.nii.gz").is_file():
        hu = np.random.default_rng(0).integers(-1000, 400, (slices, size, size), dtype=np.int16)
        write_case(folder, hu, None, (0.5, 0.92, 0.92))
    return "300"


def predict_job(challenge: str, args: argparse.Namespace, data: Path) -> tuple[list[str], int, str]:
    """The CLI predict arguments (without --out/--batch-size/--device), the item count and its unit."""
    if challenge == "panda":
        n = len((data / "test.csv").read_text().strip().splitlines()) - 1
        return ["--data", "."], n, "slides"
    if challenge == "kits":
        if args.kits_slices:
            return ["--cases", big_kits_case(data, args.kits_slices, args.kits_size)], 1, "cases"
        ids = sorted(int(p.name.split("_")[1]) for p in (data / "answers").glob("case_*"))
        return ["--cases", ",".join(map(str, ids))], len(ids), "cases"
    if challenge == "brats":
        n = sum(1 for p in data.iterdir() if p.is_dir() and p.name not in ("answers", "runs", "patches"))
        return ["--data", "."], n, "cases"
    if challenge == "lits":
        return ["--data", "."], len(list(data.glob("test-volume-*.nii*"))), "cases"
    if challenge == "midog":
        ids = test_ids(data / "answers" / "MIDOG.json")
        return ["--data", ".", "--cases", ids], len(ids.split(",")), "images"
    return ["--data", "."], sum(1 for p in (data / "testset").iterdir() if p.is_dir()), "bags"


def predict_once(challenge: str, variant: str, args: argparse.Namespace, data: Path, ckpt: Path) -> dict:
    """One CLI predict run through the --exec wrapper; seconds per item, peak memory, NMS share."""
    job, n_items, unit = predict_job(challenge, args, data)
    out = data / f"pred-{variant}"
    batch = ["--batch-size", str(SEED_PREDICT_BATCH[challenge])] if variant == "seed" else []
    if challenge == "panda":
        batch += ["--workers", "0"] if variant == "seed" else ["--workers", str(args.workers)]
    stats = data / f"stats-{variant}.json"
    cmd = [args.python, str(Path(__file__).resolve()), "--exec", str(stats), *(["--fp32"] if variant == "seed" else []),
           "--", challenge, "predict", "--checkpoint", str(ckpt), "--out", str(out), "--device", args.device,
           "--overwrite", *job, *batch]
    log = data.parent / f"{challenge}-predict.log"
    proc = te.checked(te.run_measured(cmd, data, log), f"{challenge} predict ({variant})", log)
    timing = json.loads(stats.read_text())
    shutil.rmtree(out, ignore_errors=True)
    row = {"items": n_items, "unit": unit, "s_per_item": timing["run_s"] / n_items,
           "items_per_s": n_items / timing["run_s"], "run_s": timing["run_s"], "startup_s": timing["import_s"],
           "process_wall_s": proc["wall_s"], "peak_rss_gb": proc["peak_rss_gb"],
           "peak_gpu_mem_gb": timing["peak_gpu_mem_gb"], "options": " ".join(batch) or "(defaults)"}
    if challenge == "midog":
        row["nms_s"], row["nms_points"] = timing["nms_s"], timing["nms_points"]
        row["nms_share"] = timing["nms_s"] / timing["run_s"]
    return row


def per_patch_havaei(challenge: str, args: argparse.Namespace) -> dict:
    """The report's BraTS/LiTS inference: one receptive-field patch per voxel, fp32, batches of 128 patches.

    Times ``args.patch_pixels`` voxels of one slice (random weights and intensities: the speed does not
    depend on them) and extrapolates to the whole S×H×W volume of the bench's scale (seconds per case).
    """
    import numpy as np
    import torch

    from medchallenge.core.device import resolve_device
    from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN
    from medchallenge.havaei.trainer import extract_patch

    size = sample_value(challenge, args.scale, "--size", 48)
    slices = sample_value(challenge, args.scale, "--n-slices", 10)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    in_channels = 4 if challenge == "brats" else 1  # LiTS: one CT channel, 3 classes
    classes = 5 if challenge == "brats" else 3
    net = TwoPathCNN if args.brats_model == "twopath" else InputCascadeCNN
    model = net(in_channels=in_channels, num_classes=classes).to(device).eval()
    images = np.random.default_rng(0).normal(size=(in_channels, 1, size, size)).astype(np.float32)
    picks = np.random.default_rng(1).integers(0, size, (args.patch_pixels, 2))
    batch = SEED_PREDICT_BATCH[challenge]
    try:
        with torch.no_grad():
            model(torch.from_numpy(extract_patch(images, 0, 0, 0, model.receptive_field)[None]).to(device))
            _sync(torch)
            start = time.perf_counter()
            for k in range(0, len(picks), batch):
                patches = np.stack([extract_patch(images, 0, int(y), int(x), model.receptive_field)
                                    for y, x in picks[k : k + batch]])
                model(torch.from_numpy(patches).to(device)).flatten(1).argmax(1).cpu()
            _sync(torch)
            per_voxel = (time.perf_counter() - start) / len(picks)
    except RuntimeError as error:  # e.g. a LiTS model with other input channels: report, do not stop
        return {"error": f"per-patch loop: {error}"}
    voxels = size * size * slices
    return {"items": 1, "unit": "cases", "s_per_item": per_voxel * voxels, "items_per_s": 1 / (per_voxel * voxels),
            "extrapolated_from_voxels": args.patch_pixels, "volume": [slices, size, size],
            "options": f"fp32, one {model.receptive_field} px patch per voxel, batches of {batch}"}


def naive_midog(args: argparse.Namespace, image: Path) -> dict:
    """The report's MIDOG inference: decode the whole image, then one patch at a time (512 px at real scale), fp32.

    Times ``args.naive_patches`` patches of ``image`` with a randomly initialised detector of the bench's
    backbone and extrapolates to every patch of the 10 %-overlap grid (seconds per image, NMS not included).
    """
    import tifffile
    import torch

    from medchallenge.core.device import resolve_device
    from medchallenge.midog.inference import tile_positions
    from medchallenge.midog.models import build_detector

    train = te.SPECS["midog"].train[args.scale]
    backbone, patch = train[train.index("--model") + 1], int(train[train.index("--patch-size") + 1])
    device = resolve_device(args.device)
    model = build_detector(backbone, 2, patch).to(device).eval()
    start = time.perf_counter()
    whole = tifffile.imread(image)
    decode_s = time.perf_counter() - start
    height, width = whole.shape[:2]
    grid = [(y, x) for y in tile_positions(height, patch, 0.1) for x in tile_positions(width, patch, 0.1)]
    with torch.no_grad():
        model([torch.rand(3, patch, patch, device=device)])  # warm-up
        _sync(torch)
        start = time.perf_counter()
        for y, x in grid[: args.naive_patches]:
            tile = torch.from_numpy(whole[y : y + patch, x : x + patch]).permute(2, 0, 1)
            model([tile.to(device).float() / 255])
        _sync(torch)
        per_patch = (time.perf_counter() - start) / min(len(grid), args.naive_patches)
    seconds = decode_s + per_patch * len(grid)
    return {"items": 1, "unit": "images", "s_per_item": seconds, "items_per_s": 1 / seconds, "image": [width, height],
            "patches": len(grid), "extrapolated_from_patches": min(len(grid), args.naive_patches),
            "options": f"fp32, whole image decoded, one {patch} px patch at a time ({backbone})"}


def summarise(rows: list[dict]) -> dict:
    """The first row's descriptive fields, numbers as mean (± sd over repeats)."""
    out = {k: v for k, v in rows[0].items() if not isinstance(v, float)}
    for key, value in rows[0].items():
        if isinstance(value, float):
            values = [r[key] for r in rows if isinstance(r.get(key), float)]
            out[key] = round(statistics.fmean(values), 4)
            if len(values) > 1:
                out[key + "_sd"] = round(statistics.stdev(values), 4)
    out["repeats"] = len(rows)
    return out


def predict_data(challenge: str, args: argparse.Namespace, work: Path) -> Path:
    """The folder predict reads: train_e2e's dataset, or for MIDOG with --midog-size a sample of that size."""
    if challenge != "midog" or not args.midog_size:
        return te.prepare(challenge, args.scale, args.python, work, args.workers)
    data = work / f"midog-{args.midog_size}"
    if not (data / "MIDOG.json").is_file():
        log = work / "midog-predict.log"
        te.checked(te.run_measured([*te.cli(args.python), "midog", "sample", "--out", str(data), "--n-images", "4",
                                    "--size", str(args.midog_size)], work, log), "midog sample", log)
    return data


def bench_challenge(challenge: str, args: argparse.Namespace, work: Path) -> dict:
    """Checkpoint, then ours/seed CLI predicts alternately (+ the per-patch loop); the challenge's JSON entry."""
    ckpt = checkpoint(challenge, args, te.prepare(challenge, args.scale, args.python, work, args.workers))
    data = predict_data(challenge, args, work)
    runs: dict[str, list[dict]] = {"seed": [], "ours": []}
    for k in range(args.repeats):
        for variant in (("seed", "ours") if k % 2 == 0 else ("ours", "seed")):
            runs[variant].append(predict_once(challenge, variant, args, data, ckpt))
    entry = {"seed_cli": summarise(runs["seed"]), "ours": summarise(runs["ours"])}
    entry["ratio_ours_vs_seed_cli"] = round(entry["seed_cli"]["s_per_item"] / entry["ours"]["s_per_item"], 3)
    if challenge == "kits" and args.kits_slices:  # the target is per case: say its size and slices/s
        entry["case"] = [args.kits_slices, args.kits_size, args.kits_size]
        for name in ("seed_cli", "ours"):
            entry[name]["slices_per_s"] = round(args.kits_slices / entry[name]["s_per_item"], 1)
    if challenge in PER_PATCH:
        if challenge == "midog":
            image = data / f"{test_ids(data / 'answers' / 'MIDOG.json').split(',')[0].zfill(3)}.tiff"
            loop = naive_midog(args, image)
        else:
            loop = per_patch_havaei(challenge, args)
        entry["seed_per_patch"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in loop.items()}
        if "s_per_item" in loop:
            entry["ratio_ours_vs_seed_per_patch"] = round(loop["s_per_item"] / entry["ours"]["s_per_item"], 2)
    return entry


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--challenge", choices=(*te.CHALLENGES, "all"), default="all")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--scale", choices=("small", "real"), default="small")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the train_e2e run whose best.pt is used (ours-SEED)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 2 CPU, 8 CUDA)")
    parser.add_argument("--brats-model", choices=("twopath", "inputcascade"), default="twopath")
    parser.add_argument("--kits-slices", type=int, default=0, help="predict one extra KiTS case of N slices")
    parser.add_argument("--kits-size", type=int, default=512, help="its in-plane size, px")
    parser.add_argument("--midog-size", type=int, default=0, help="predict a MIDOG sample of this width (7215)")
    parser.add_argument("--patch-pixels", type=int, default=2048, help="voxels timed in the BraTS per-patch loop")
    parser.add_argument("--naive-patches", type=int, default=8, help="patches timed in the MIDOG one-patch loop")
    parser.add_argument("--work", type=Path, default=None, help="train_e2e.py's --work folder (reused)")
    return te.parse_common(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="predict_e2e-"))
    chosen = te.CHALLENGES if args.challenge == "all" else (args.challenge,)
    result: dict = {"bench": "predict_e2e", "device": args.device, "scale": args.scale,
                    "threads": args.threads, "machine": te.machine(args.python), "challenges": {}}
    te.run_all(chosen, bench_challenge, args, work, result)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--exec":
        exec_wrapped(sys.argv[2:])
    else:
        main()
