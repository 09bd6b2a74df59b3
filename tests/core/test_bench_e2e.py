"""Helpers of bench/train_e2e.py: the seed's way vs ours, and the MIDOG sample count correction (no timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import train_e2e as te  # noqa: E402


def test_seed_way_is_fp32_report_batch_main_process() -> None:
    for challenge, spec in te.SPECS.items():
        seed = te.variant_args(challenge, "seed", "cuda", 8)
        assert seed == ["--no-amp", "--batch-size", str(spec.seed_batch), "--workers", "0"], challenge
    assert te.SPECS["panda"].seed_batch == 2 and te.SPECS["kits"].seed_batch == 4  # reports 000 and 001
    ours = te.variant_args("panda", "ours", "cuda", 8)
    assert {"--amp", "--channels-last"} <= set(ours) and ours[ours.index("--workers") + 1] == "8"
    assert "--channels-last" not in te.variant_args("panda", "ours", "cpu", 2)


def test_midog_count_factor_restores_patches_per_batch(tmp_path: Path) -> None:
    # 3 training images × 6 patches in 1 batch: the engine logged 3 samples, the truth is 18
    (tmp_path / "split.json").write_text(json.dumps({"train": ["1", "51", "101"], "val": ["2"]}))
    (tmp_path / "train.log").write_text("2026-01-01 00:00:00 midog run r: 1 batches per epoch, epochs 1-2\n")
    assert te.midog_count_factor(tmp_path, ["--patches-per-image", "6"]) == 6.0
