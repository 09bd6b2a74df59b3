"""Evaluate the real KiTS19 case_00000 label map (611×512×512) against itself: seconds and peak memory.

    .venv/bin/python bench/kits_evaluate.py [--file ../shared/realdata/kits19/case_00000_segmentation.nii.gz]

Reads both volumes, checks labels, scores (as `kits evaluate` does). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from medchallenge.core.nifti import read_volume
from medchallenge.kits.data import check_labels
from medchallenge.kits.metrics import score_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared/realdata/kits19/case_00000_segmentation.nii.gz"
    parser.add_argument("--file", type=Path, default=default)
    args = parser.parse_args()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    truth = check_labels(read_volume(args.file).array, args.file)
    pred = check_labels(read_volume(args.file).array, args.file)
    read_s = time.perf_counter() - start
    score = score_case("case_00000", pred, truth)
    total_s = time.perf_counter() - start
    print(json.dumps({
        "voxels": int(truth.size), "shape": list(truth.shape), "read_s": round(read_s, 2),
        "score_s": round(total_s - read_s, 2), "total_s": round(total_s, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_rss_above_start_gb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 2**20, 3),
        "kidney_dice": score.kidney_dice, "tumor_dice": score.tumor_dice,
    }))


if __name__ == "__main__":
    main()
