"""One training epoch and one evaluation pass, as plain functions over a Trainer's hooks."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medchallenge.core import console
from medchallenge.core.engine.position import EpochPosition, set_rng_state
from medchallenge.core.engine.steplog import StepLog
from medchallenge.core.errors import TrainingError

if TYPE_CHECKING:
    from medchallenge.core.engine.trainer import Trainer


@dataclass
class StepState:
    """What one optimisation step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None


def train_one_epoch(trainer: Trainer, model: nn.Module, loader: DataLoader, state: StepState, epoch: int,
                    position: EpochPosition | None = None,
                    after_step: Callable[[EpochPosition], None] | None = None) -> tuple[float, float, float]:
    """Train ``model`` for one pass over ``loader``; returns (mean loss, samples/s, share of time waiting for data).

    Gradients of ``accumulate`` batches are summed (each loss divided by ``accumulate``) before
    one optimizer step, so ``--accumulate 2`` at batch b follows batch 2b. Under DDP the
    all-reduce is skipped on the non-boundary batches (``no_sync``). ``position`` resumes a
    stopped epoch: its finished batches are skipped (same order) and its random states restored.
    ``after_step`` is called after every optimizer step with the position reached.
    """
    cfg = trainer.config
    model.train()
    state.optimizer.zero_grad(set_to_none=True)
    start = position.batches_done if position is not None else 0
    total, count = (position.loss_sum, position.count) if position is not None else (0.0, 0)
    n_batches = len(loader)
    with StepLog(epoch, cfg.epochs, n_batches, cfg.log_every, trainer.device, start) as steplog:
        fetched = time.perf_counter()
        for step, batch in enumerate(loader):
            wait = time.perf_counter() - fetched  # time this step waited for its batch
            if step < start:
                continue  # done before the stop; loading it again keeps the data order and data randomness
            if step == start and position is not None and position.rng:
                set_rng_state(position.rng)
            boundary = (step + 1) % cfg.accumulate == 0 or step + 1 == n_batches
            loss_value = _forward_backward(trainer, model, batch, state, boundary, (epoch, step))
            total += loss_value
            count += 1
            if boundary:
                _optimizer_step(model, state, cfg.grad_clip)
                if after_step is not None and step + 1 < n_batches:
                    after_step(EpochPosition(epoch, step + 1, total, count))
            lr = state.optimizer.param_groups[0]["lr"]
            steplog.update(step + 1, total / count, lr, trainer.batch_samples(batch), wait)
            trainer.record_step(epoch * n_batches + step + 1, loss_value, lr)
            fetched = time.perf_counter()
    return total / max(count, 1), steplog.rate(), steplog.wait_share()


def _forward_backward(trainer: Trainer, model: nn.Module, batch: Any, state: StepState, boundary: bool,
                      where: tuple[int, int]) -> float:
    """Loss of one batch, backpropagated (scaled by 1/accumulate); a non-finite loss stops training."""
    batch = trainer.to_device(batch)
    sync = contextlib.nullcontext()
    if trainer.dist.enabled and not boundary and hasattr(model, "no_sync"):
        sync = model.no_sync()  # type: ignore[operator]  # all-reduce only on the accumulation boundary
    with sync:
        with trainer.autocast():
            loss = trainer.training_step(model, batch)
        loss_value = float(loss.detach().float().item())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"non-finite loss ({loss_value}) at epoch {where[0] + 1}, step {where[1] + 1}: training stopped;"
                f" lower --lr or disable AMP; the last good checkpoint is {trainer.run_dir / 'last.pt'}"
            )
        _backward(loss / trainer.config.accumulate, state.scaler)
    return loss_value


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _optimizer_step(model: nn.Module, state: StepState, grad_clip: float | None) -> None:
    if grad_clip:
        if state.scaler is not None:
            state.scaler.unscale_(state.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.scheduler is not None:
        state.scheduler.step()


def evaluate(trainer: Trainer, model: nn.Module) -> dict[str, float]:
    """Score ``model`` (eval mode, no gradients) on the validation data.

    A trainer either overrides ``validate(model)`` whole, or gives ``val_loader()`` plus a
    per-batch ``validation_step(model, batch)`` whose outputs ``aggregate_validation`` reduces.
    """
    model.eval()
    with torch.no_grad():
        loader = trainer.val_loader()
        if loader is None:
            return trainer.validate(model)
        outputs: list[Any] = []
        for batch in console.track(loader, "validation", total=len(loader)):
            with trainer.autocast():
                outputs.append(trainer.validation_step(model, trainer.to_device(batch)))
        return trainer.aggregate_validation(outputs)
