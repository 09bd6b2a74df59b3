"""Feature extraction speed and memory for the largest bag (~200 images) through ResNet18.

    .venv/bin/python bench/lympho_features.py --device cpu --images 200 --crop 112

Prints one JSON object: images/s and peak memory (RSS on CPU, GPU memory on CUDA), eval mode,
chunked as `predict` runs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.lympho.models import LymphoModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = LymphoModel("mean", chunk=args.chunk).to(device).eval()
    images = torch.randint(0, 256, (args.images, 3, args.crop, args.crop), dtype=torch.uint8, device=device)
    bags = torch.zeros(args.images, dtype=torch.long, device=device)
    clinical = torch.zeros(1, 2, device=device)
    dtype = amp_dtype(device)
    with torch.inference_mode(), autocast(device, dtype):
        model(images, bags, clinical)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(images, bags, clinical)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    result = {"device": str(device), "images": args.images, "crop": args.crop, "chunk": args.chunk,
              "amp": str(dtype), "images_per_s": round(args.images * args.repeats / elapsed, 1),
              "bag_ms": round(1000 * elapsed / args.repeats, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device.type == "cuda":
        result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
