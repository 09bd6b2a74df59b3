"""Whole-volume KiTS prediction speed and memory on a synthetic 611-slice case.

    .venv/bin/python bench/kits_predict.py --device cpu --size 512 --slices 611 --width 32 --depth 4

Writes one KiTS-style case (axial axis first, like case_00000), predicts it with a randomly
initialised U-Net (the speed does not depend on the weights) through `predict_cases`, and reports
slices/s and peak memory (RSS; GPU memory on CUDA). Prints one JSON object.
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

from medchallenge.core.checkpoint import save_checkpoint
from medchallenge.kits.models import MODELS, unet_spec
from medchallenge.kits.predict import predict_cases
from medchallenge.kits.sample import write_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=611)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        hu = rng.integers(-1000, 400, (args.slices, args.size, args.size), dtype=np.int16)
        write_case(root / "data" / "case_00000", hu, None, (0.5, 0.92, 0.92))
        del hu
        spec = unet_spec(args.depth, args.width)
        save_checkpoint(root / "model.pt", {"challenge": "kits", "model": spec,
                                            "state_dict": MODELS.build(spec).state_dict(),
                                            "meta": {"normalisation": {"low": -79.0, "high": 304.0, "mean": 101.0,
                                                                       "std": 76.9}}})
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        predict_cases(root / "model.pt", root, root / "pred", device=args.device, batch_size=args.batch_size)
        elapsed = time.perf_counter() - start
        result = {
            "device": args.device, "slices": args.slices, "size": args.size, "width": args.width, "depth": args.depth,
            "batch_size": args.batch_size, "seconds": round(elapsed, 2),
            "slices_per_s": round(args.slices / elapsed, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "peak_rss_above_start_gb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 2**20, 3),
            "volume_float32_gb": round(args.slices * args.size**2 * 4 / 2**30, 3),
            "all_probabilities_gb": round(3 * args.slices * args.size**2 * 4 / 2**30, 3),
        }
        if torch.cuda.is_available() and args.device != "cpu":
            result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            result["gpu"] = torch.cuda.get_device_name()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
