"""Training throughput and peak memory of the PANDA classifier (no data loading: random tiles).

    .venv/bin/python bench/panda_train.py --device cuda --arch efficientnet-b0 --batch-size 4 --tiles 36 --tile-size 256
    .venv/bin/python bench/panda_train.py --device cpu --batch-size 2 --tiles 16 --tile-size 64
    # the mask-guided classifier (4 channels), with and without gradient checkpointing:
    .venv/bin/python bench/panda_train.py --device cuda --channels 4 --batch-size 4 --grad-checkpoint both
    # the tile U-Net, a batch of 2 slides × 36 tiles of 256 px:
    .venv/bin/python bench/panda_train.py --device cuda --model unet --batch-size 2

Prints one JSON object per configuration: slides/s, step ms, peak GPU memory (CUDA) or peak RSS (CPU;
the process maximum, so on the CPU measure one configuration per call).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.panda import encoding as enc
from medchallenge.panda.models import PandaClassifier
from medchallenge.panda.segtrain import segmentation_loss
from medchallenge.panda.unet import PandaUNet


def measure(args: argparse.Namespace, channels_last: bool, amp: bool, grad_checkpoint: bool) -> dict:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    unet = args.model == "unet"
    if unet:  # the tile U-Net: a batch is batch_size slides' tiles (the report's collate), 6 Radboud classes
        model: torch.nn.Module = PandaUNet(6, depth=3, width=args.unet_width).to(device)
        args.channels = 3
    else:
        model = PandaClassifier(args.arch, "ordinal", args.layout, in_channels=args.channels, pretrained=False,
                                grad_checkpoint=grad_checkpoint).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    tiles = torch.randint(0, 256, (args.batch_size, args.tiles, args.channels, args.tile_size, args.tile_size),
                          dtype=torch.uint8, device=device)
    grades = torch.randint(0, 6, (args.batch_size,), device=device)
    masks = torch.randint(0, 6, (args.batch_size * args.tiles, args.tile_size, args.tile_size), device=device)
    flat = tiles.reshape(-1, *tiles.shape[2:])
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True

    def step() -> None:
        with autocast(device, dtype):
            if unet:
                loss = segmentation_loss("dice-ce", model(flat), masks, None)
            else:
                loss = enc.loss("ordinal", model(tiles), grades)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    result = {
        "device": str(device), "model": args.model, "arch": "unet" if unet else args.arch, "layout": args.layout, "batch_size": args.batch_size,
        "tiles": args.tiles, "tile_size": args.tile_size, "channels": args.channels,
        "amp": str(dtype).replace("torch.", "") if dtype else "fp32", "channels_last": channels_last,
        "grad_checkpoint": grad_checkpoint, "step_ms": round(1000 * elapsed / args.steps, 1),
        "slides_per_s": round(args.batch_size * args.steps / elapsed, 2),
    }
    if device.type == "cuda":
        result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["gpu"] = torch.cuda.get_device_name(device)
    else:
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", choices=("classifier", "unet"), default="classifier")
    parser.add_argument("--unet-width", type=int, default=32)
    parser.add_argument("--arch", default="efficientnet-b0")
    parser.add_argument("--layout", default="mosaic")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tiles", type=int, default=36)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="fp32 / AMP × channels_last")
    parser.add_argument("--grad-checkpoint", choices=("off", "on", "both"), default="off")
    args = parser.parse_args()
    configs = [(False, False), (False, True), (True, True)] if args.sweep else [(args.channels_last, True)]
    checkpointing = {"off": [False], "on": [True], "both": [False, True]}[args.grad_checkpoint]
    for channels_last, amp in configs:
        for grad_checkpoint in checkpointing:
            print(json.dumps(measure(args, channels_last, amp, grad_checkpoint)), flush=True)


if __name__ == "__main__":
    main()
