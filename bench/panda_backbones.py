"""The report's backbone comparison: each backbone pretrained and from scratch, same split, same budget.

    .venv/bin/python bench/panda_backbones.py --out bench-out/backbones            # makes its own sample
    .venv/bin/python bench/panda_backbones.py --tiles tiles --epochs 10 --device cuda --batch-size 4

Trains the PANDA classifier (ordinal encoding, mosaic layout) once per (backbone, pretrained) with
the same seed and validation split, and writes the report's table: backbone, pretrained, best
validation accuracy, best validation QWK, wall time. A pretrained row whose ImageNet weights are
not in the torch hub cache (or ``--weights-dir``) is not trained: it says which file is missing.
Prints one JSON object per row and writes ``results.json`` and ``table.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from medchallenge.core.backbones import weights_file_name
from medchallenge.core.engine import TrainConfig
from medchallenge.core.pretrained import hub_checkpoint_dir
from medchallenge.panda.sample import write_sample_dataset
from medchallenge.panda.tiles import tile_slides
from medchallenge.panda.train import PandaOptions, PandaTrainer

BACKBONES = ("resnet18", "alexnet", "vgg16", "resnext50_32x4d", "efficientnet-b0")


def run_one(args: argparse.Namespace, tiles: Path, arch: str, pretrained: bool) -> dict:
    row: dict = {"backbone": arch, "pretrained": pretrained}
    weights = None
    if pretrained:
        name = weights_file_name(arch)
        candidates = [Path(args.weights_dir) / name] if args.weights_dir else []
        candidates.append(hub_checkpoint_dir() / name)
        found = [p for p in candidates if p.is_file()]
        if not found:
            row.update(status=f"weights missing: {candidates[-1]}", best_val_accuracy=None, best_val_qwk=None,
                       wall_s=None)
            return row
        weights = found[0]
    out = Path(args.out) / "runs" / f"{arch}-{'pretrained' if pretrained else 'scratch'}"
    if out.exists():
        shutil.rmtree(out)
    config = TrainConfig(out=out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1.0,
                         device=args.device, workers=args.workers, seed=args.seed, amp=True,
                         channels_last=args.device != "cpu")
    options = PandaOptions(cache=tiles, arch=arch, encoding="ordinal", layout="mosaic", pretrained=pretrained,
                           weights=weights, val_fraction=args.val_fraction)
    start = time.perf_counter()
    PandaTrainer(config, options).fit()
    wall = time.perf_counter() - start
    history = pd.read_csv(out / "metrics.csv")
    row.update(status="trained", best_val_accuracy=round(float(history["accuracy"].max()), 4),
               best_val_qwk=round(float(history["qwk"].max()), 4), wall_s=round(wall, 1))
    return row


def markdown(rows: list[dict], args: argparse.Namespace, n_val: int) -> str:
    fmt = lambda v: "–" if v is None else f"{v}"  # noqa: E731
    lines = [f"Backbones on {args.tiles or 'a synthetic sample'}: {args.epochs} epochs, batch {args.batch_size},"
             f" lr {args.lr}, seed {args.seed}, {n_val} validation slides, device {args.device}.", "",
             "| backbone | pretrained | best val accuracy | best val QWK | wall time (s) | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        note = "" if r["status"] == "trained" else r["status"]
        lines.append(f"| {r['backbone']} | {'yes' if r['pretrained'] else 'no'} | {fmt(r['best_val_accuracy'])} |"
                     f" {fmt(r['best_val_qwk'])} | {fmt(r['wall_s'])} | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=Path, help="A tile cache (default: sample and tile a small synthetic set).")
    parser.add_argument("--out", type=Path, default=Path("bench-out/backbones"))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", type=Path, help="Folder holding the ImageNet weight files (hub file names).")
    parser.add_argument("--n-slides", type=int, default=60, help="Synthetic sample: slides.")
    parser.add_argument("--slide-size", type=int, default=1024, help="Synthetic sample: level-0 size, px.")
    parser.add_argument("--n-tiles", type=int, default=16, help="Synthetic sample: tiles per slide.")
    parser.add_argument("--tile-size", type=int, default=32, help="Synthetic sample: tile size, px.")
    args = parser.parse_args()
    tiles = args.tiles
    if tiles is None:
        data, tiles = args.out / "data", args.out / "tiles"
        if not (data / "train.csv").is_file():
            write_sample_dataset(data, n_slides=args.n_slides, seed=args.seed, size=args.slide_size)
        tile_slides(data, tiles, level=1, n_tiles=args.n_tiles, tile_size=args.tile_size)
    rows = []
    for arch in args.backbones:
        for pretrained in (True, False):
            row = run_one(args, tiles, arch, pretrained)
            rows.append(row)
            print(json.dumps(row), flush=True)
    n_val = 0
    trained = [r for r in rows if r["status"] == "trained"]
    if trained:  # every run shares the split: read it from the first checkpoint
        first = trained[0]
        best = args.out / "runs" / f"{first['backbone']}-{'pretrained' if first['pretrained'] else 'scratch'}" / "best.pt"
        n_val = len(torch.load(best, weights_only=True)["meta"]["val_ids"])
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, args, n_val)
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
