"""Whole-slice inference through the convolutional output layer vs classifying every pixel's own patch.

    .venv/bin/python bench/brats_inference.py --device cpu --size 240 --model twopath

Checks the labels are identical on a subset of pixels, times the per-patch loop on that subset
(batched patches, extrapolated to the slice, said in the JSON), and measures training throughput
in patches/s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.nn import functional as F

from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.havaei.inference import segment_slices
from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN
from medchallenge.havaei.trainer import extract_patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="twopath", choices=["twopath", "inputcascade"])
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--pixels", type=int, default=2000, help="pixels classified one patch each (extrapolated)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
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
    print(json.dumps({
        "device": str(device), "model": args.model, "slice": args.size, "whole_slice_s": round(whole_s, 4),
        "per_patch_s_extrapolated": round(patch_s, 3), "per_patch_pixels_timed": args.pixels,
        "speedup": round(patch_s / whole_s, 1), "labels_identical_on_timed_pixels": identical,
        "train_patches_per_s": round(train_pps, 1), "train_amp": str(dtype),
    }))


if __name__ == "__main__":
    main()
