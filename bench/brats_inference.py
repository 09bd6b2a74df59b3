"""Whole-slice inference through the convolutional output layer vs classifying every pixel's own patch.

    .venv/bin/python bench/brats_inference.py --device cpu --size 240 --model twopath
    .venv/bin/python bench/brats_inference.py --device cpu --predict-case   # + `brats predict` of a 4×240×240×155 case

Checks the labels are identical on a subset of pixels, times the per-patch loop on that subset
(batched patches, extrapolated to the slice, said in the JSON), and measures training throughput
in patches/s. With ``--predict-case``: writes one real-size case (four int16 modalities,
240×240×155, the synthetic tumour of ``brats sample``), trains a tiny checkpoint (1 epoch, 16
patches), and runs the real ``medchallenge brats predict`` on it in a subprocess, reporting its
peak RSS (VmHWM) next to the same interpreter's RSS after importing the package. On a CPU the
network would take an hour on that volume, so the whole-volume run replaces the network by a
zero-logit stand-in (every other step real: reading, normalising, batching, writing) and a second
real run on ``--time-slices`` slices of the same size gives the network's seconds per slice; the
JSON gives both and their extrapolation to the whole volume. The seed's per-patch way on that
volume is extrapolated from the per-patch timing (the issue measured it at 535 s and 2.97 GB).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.havaei.inference import segment_slices
from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN
from medchallenge.havaei.trainer import extract_patch

# run in a fresh interpreter: its VmHWM is the peak of the predict command alone (plus the imports).
# argv: threads, stub (1: the network replaced by a zero-logit stand-in of the same output shape, so
# the host-memory path of a whole volume is measured without hours of CPU convolution), CLI args.
CHILD = """
import sys, time
def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
from medchallenge.cli import app
import torch
torch.set_num_threads(int(sys.argv[1]))
if sys.argv[2] == '1':
    from medchallenge.havaei import inference
    inference.padded_forward = lambda model: (lambda x: torch.zeros(x.shape[0], 5, *x.shape[2:], device=x.device))
base = hwm()
start = time.perf_counter()
app(sys.argv[3:], standalone_mode=False)
print('RESULT', time.perf_counter() - start, base, hwm())
"""


def _case(folder: Path, size: int, slices: int) -> None:
    """One case of four int16 modalities (the synthetic tumour of ``brats sample``) under ``folder``."""
    from medchallenge.brats.sample import draw_case
    from medchallenge.core.nifti import Geometry, write_volume

    images, _ = draw_case(size, slices, np.random.default_rng(0))
    geometry = Geometry(size=(size, size, slices), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0),
                        direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    name = "BraTS20_Training_001"
    for k, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        write_volume(folder / name / f"{name}_{modality}.nii.gz", images[k].astype(np.int16), geometry)


def _child(threads: int, stub: bool, checkpoint: Path, data: Path, out: Path, device: str) -> tuple[float, ...]:
    """(seconds, RSS after imports MB, peak RSS MB) of ``brats predict`` in a fresh interpreter."""
    args = ["brats", "predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
            "--device", device]
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), "1" if stub else "0", *args],
                          capture_output=True, text=True, check=True)
    return tuple(map(float, done.stdout.split("RESULT")[-1].split()))


def predict_case(device: str, threads: int, slices: int, size: int, time_slices: int) -> dict[str, Any]:
    """``brats predict`` of one 4×``slices``×``size``×``size`` case in subprocesses: peak RSS (MB) of the whole
    volume with the network stubbed, and the network's seconds per slice on ``time_slices`` real slices."""
    from medchallenge.brats.sample import write_sample_dataset
    from medchallenge.cli import app

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sample_dataset(root / "small", n_cases=3, size=32, n_slices=2)
        app(["brats", "tile", "--data", str(root / "small"), "--cache", str(root / "cache")], standalone_mode=False)
        app(["brats", "train", "--cache", str(root / "cache"), "--out", str(root / "run"), "--epochs", "1",
             "--patches-per-epoch", "16", "--batch-size", "16", "--device", "cpu", "--val-max-cases", "1"],
            standalone_mode=False)
        checkpoint = root / "run" / "best.pt"
        _case(root / "big", size, slices)
        stub_s, base_mb, peak_mb = _child(threads, True, checkpoint, root / "big", root / "pred-stub", device)
        _case(root / "few", size, time_slices)
        few_s, _, few_peak_mb = _child(threads, False, checkpoint, root / "few", root / "pred-few", device)
    net_per_slice = max(0.0, few_s - stub_s * time_slices / slices) / time_slices
    return {"shape": [4, slices, size, size], "threads": threads,
            "peak_rss_mb_whole_volume_network_stubbed": round(peak_mb), "rss_after_imports_mb": round(base_mb),
            "predict_rss_increment_mb": round(peak_mb - base_mb), "case_float32_mb": round(4 * slices * size**2 * 4 / 2**20),
            "predict_s_network_stubbed": round(stub_s, 2), "time_slices": time_slices,
            "predict_s_time_slices": round(few_s, 2), "peak_rss_mb_time_slices": round(few_peak_mb),
            "network_s_per_slice": round(net_per_slice, 3),
            "predict_s_extrapolated": round(stub_s + net_per_slice * slices, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="twopath", choices=["twopath", "inputcascade"])
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--pixels", type=int, default=2000, help="pixels classified one patch each (extrapolated)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--predict-case", action="store_true", help="also `brats predict` of a real-size case")
    parser.add_argument("--slices", type=int, default=155, help="slices of the --predict-case volume")
    parser.add_argument("--time-slices", type=int, default=4, help="slices predicted with the real network (timing)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (both ways)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = (TwoPathCNN() if args.model == "twopath" else InputCascadeCNN()).to(device).eval()
    rf = model.receptive_field
    images = np.random.default_rng(0).normal(size=(4, 1, args.size, args.size)).astype(np.float32)
    with torch.no_grad():
        segment_slices(model, images, device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        whole = segment_slices(model, images, device)[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        whole_s = time.perf_counter() - start
        rng = np.random.default_rng(1)
        picks = rng.integers(0, args.size, (args.pixels, 2))
        start = time.perf_counter()
        labels = []
        for k in range(0, len(picks), args.batch_size):
            batch = np.stack([extract_patch(images, 0, int(y), int(x), rf) for y, x in picks[k : k + args.batch_size]])
            labels.append(model(torch.from_numpy(batch).to(device)).flatten(1).argmax(1).cpu().numpy())
        if device.type == "cuda":
            torch.cuda.synchronize()
        patch_s = (time.perf_counter() - start) / len(picks) * args.size**2
        identical = bool((np.concatenate(labels) == whole[picks[:, 0], picks[:, 1]]).all())
    # training throughput
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    dtype = amp_dtype(device)
    batch = torch.randn(128, 4, rf, rf, device=device)
    target = torch.randint(0, 5, (128,), device=device)
    for step in range(8):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast(device, dtype):
            loss = F.cross_entropy(model(batch).flatten(1).float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_pps = 5 * 128 / (time.perf_counter() - start)
    result: dict[str, Any] = {
        "device": str(device), "model": args.model, "slice": args.size, "whole_slice_s": round(whole_s, 4),
        "per_patch_s_extrapolated": round(patch_s, 3), "per_patch_pixels_timed": args.pixels,
        "speedup": round(patch_s / whole_s, 1), "labels_identical_on_timed_pixels": identical,
        "train_patches_per_s": round(train_pps, 1), "train_amp": str(dtype), "threads": args.threads,
    }
    if args.predict_case:
        case = predict_case(args.device, args.threads, args.slices, args.size, args.time_slices)
        # the seed's way on the same volume: every voxel's own patch, at the per-patch rate timed above
        case["per_patch_s_extrapolated"] = round(patch_s * args.slices, 1)
        case["speedup_vs_per_patch"] = round(case["per_patch_s_extrapolated"] / case["predict_s_extrapolated"], 1)
        result["predict_case"] = case
    print(json.dumps(result))


if __name__ == "__main__":
    main()
