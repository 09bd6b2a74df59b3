"""Whole-image MIDOG inference (7215×5412 by default): batched tiling vs a naive one-patch loop.

    .venv/bin/python bench/midog_inference.py --device cuda --backbone resnet50
    .venv/bin/python bench/midog_inference.py --device cpu --width 2048 --height 1536   # CPU-sized

Writes one synthetic tiled TIFF, runs `detect_image` (patches read lazily, batched) and a naive
loop (one patch at a time, the whole image decoded first) with a randomly initialised RetinaNet
(speed does not depend on the weights). Prints one JSON object: seconds, patches/s, peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.wsi import open_slide
from medchallenge.midog.inference import detect_image, tile_positions
from medchallenge.midog.models import build_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--width", type=int, default=7215)
    parser.add_argument("--height", type=int, default=5412)
    parser.add_argument("--patch", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--naive-patches", type=int, default=20, help="patches timed in the naive loop (extrapolated)")
    args = parser.parse_args()
    import tifffile

    device = resolve_device(args.device)
    dtype = amp_dtype(device)
    model = build_detector(args.backbone, 2, args.patch).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "001.tiff"
        rng = np.random.default_rng(0)
        tifffile.imwrite(path, rng.integers(120, 230, (args.height, args.width, 3), dtype=np.uint8), tile=(256, 256),
                         photometric="rgb", compression="jpeg")
        n_patches = len(tile_positions(args.width, args.patch, 0.1)) * len(tile_positions(args.height, args.patch, 0.1))
        with open_slide(path) as reader:  # warm-up (cudnn autotune, allocator)
            reader.read_region(0, 0, 0, args.patch, args.patch)
            with torch.no_grad(), autocast(device, dtype):
                model([torch.rand(3, args.patch, args.patch, device=device)])
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with open_slide(path) as reader:
            detect_image(model, reader, args.patch, device, args.batch_size, 0.1, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        batched_s = time.perf_counter() - start
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gpu_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        # naive: decode the whole image, then one patch at a time
        start = time.perf_counter()
        whole = tifffile.imread(path)
        xs, ys = tile_positions(args.width, args.patch, 0.1), tile_positions(args.height, args.patch, 0.1)
        done = 0
        with torch.no_grad():
            for y in ys:
                for x in xs:
                    if done >= args.naive_patches:
                        break
                    patch = torch.from_numpy(whole[y : y + args.patch, x : x + args.patch]).permute(2, 0, 1)
                    with autocast(device, dtype):
                        model([patch.to(device).float() / 255])
                    done += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        naive_s = (time.perf_counter() - start) / done * n_patches
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "device": str(device), "backbone": args.backbone, "image": [args.width, args.height], "patch": args.patch,
        "patches": n_patches, "batch_size": args.batch_size, "amp": str(dtype),
        "batched_s": round(batched_s, 2), "batched_patches_per_s": round(n_patches / batched_s, 1),
        "naive_s_extrapolated": round(naive_s, 2), "naive_patches_timed": done,
        "speedup": round(naive_s / batched_s, 2),
        "peak_rss_gb_after_batched": round(rss1 / 2**20, 3), "rss_growth_batched_gb": round((rss1 - rss0) / 2**20, 3),
        "rss_growth_naive_gb": round((rss2 - rss1) / 2**20, 3),
        "peak_gpu_mem_gb": None if gpu_peak is None else round(gpu_peak, 3),
    }))


if __name__ == "__main__":
    main()
