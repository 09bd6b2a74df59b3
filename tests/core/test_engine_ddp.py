"""DDP through the engine on the CPU (Gloo).

Two ranks at batch b must end with identical parameters, equal to one process trained at batch 2b
on the same samples: without the DDP wrapper each rank would follow its own half of the data.
"""

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


def _kwargs() -> dict:
    return dict(epochs=2, optimizer="sgd", momentum=0.0, scheduler="none", warmup_epochs=0, lr=0.1)


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from test_engine import Deterministic, _config  # the toy task of test_engine.py

    trainer = Deterministic(_config(Path(out), batch_size=8, **_kwargs()))
    result = trainer.fit()
    torch.save(result["history"], Path(out).parent / f"history{rank}.pt")
    # every rank saves its own final parameters (only rank 0 writes checkpoints)
    model_state = {k: v.detach().clone() for k, v in trainer._final_state.items()}
    torch.save(model_state, Path(out).parent / f"params{rank}.pt")


def test_ddp_two_ranks_match_one_process_on_the_combined_batch(tmp_path: Path) -> None:
    import test_engine

    out = tmp_path / "run"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert (out / "best.pt").is_file() and (out / "plots" / "loss.png").is_file()
    p0 = torch.load(tmp_path / "params0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params1.pt", weights_only=True)
    single = test_engine.Deterministic(test_engine._config(tmp_path / "single", batch_size=16, **_kwargs()))
    single.fit()
    ref = load_checkpoint(tmp_path / "single" / "last.pt")["state_dict"]
    for key in ref:
        assert torch.equal(p0[key], p1[key]), key  # ranks stay in step
        torch.testing.assert_close(p0[key], ref[key], rtol=1e-5, atol=1e-6)
    h0 = torch.load(tmp_path / "history0.pt", weights_only=True)
    h1 = torch.load(tmp_path / "history1.pt", weights_only=True)
    assert [r["accuracy"] for r in h0] == [r["accuracy"] for r in h1]
    # the logged loss is the mean over ranks (each rank saw other batches), the same on every rank
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]
