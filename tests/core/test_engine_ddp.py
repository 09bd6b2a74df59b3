"""DDP through the engine on the CPU (Gloo): two ranks train in step, only rank 0 writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import torch
import torch.multiprocessing as mp

from medchallenge.core.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from test_engine import ToyTrainer, _config  # the toy task of test_engine.py

    result = ToyTrainer(_config(Path(out), epochs=2)).fit()
    torch.save(result["history"], Path(out).parent / f"history{rank}.pt")


def test_ddp_two_ranks(tmp_path: Path) -> None:
    out = tmp_path / "run"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["epochs"] == 2
    # both ranks saw the same validation metrics (broadcast from rank 0)
    h0 = torch.load(tmp_path / "history0.pt", weights_only=True)
    h1 = torch.load(tmp_path / "history1.pt", weights_only=True)
    assert [r["accuracy"] for r in h0] == [r["accuracy"] for r in h1]
    assert (out / "best.pt").is_file() and (out / "plots" / "loss.png").is_file()
