"""Optimizers and per-step learning-rate schedules, and how to describe what actually ran."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medchallenge.core.engine.config import TrainConfig
from medchallenge.core.errors import OptionError

Scheduler = torch.optim.lr_scheduler.LRScheduler


def build_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) from the config."""
    name = config.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise OptionError(f"--optimizer {config.optimizer}: expected adam, adamw or sgd")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler | None:
    """A per-step LambdaLR: linear warm-up then cosine to 0, a step decay, or none.

    The returned scheduler carries a ``description`` dict that config.json records.
    """
    name = config.scheduler.lower()
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = max(1, config.epochs * steps_per_epoch)
    if name == "none":
        if warmup == 0:
            return None
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        return describe(scheduler, "constant", warmup_steps=warmup)
    if name == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
        return describe(scheduler, "cosine", warmup_steps=warmup, total_steps=total)
    if name == "step":
        every = max(1, config.step_size * steps_per_epoch)
        gamma = config.gamma
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (min(1.0, (s + 1) / warmup) if s < warmup else 1.0) * gamma ** (s // every)
        )
        return describe(scheduler, "step", warmup_steps=warmup, step_every_steps=every, gamma=gamma)
    raise OptionError(f"--scheduler {config.scheduler}: expected cosine, step or none")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor at ``step``: linear from ~0 to 1 over the warm-up, then cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def describe(scheduler: Scheduler, name: str, **params: Any) -> Scheduler:
    """Attach what config.json records about a schedule (its name and parameters, per optimizer step)."""
    scheduler.description = {"name": name, "unit": "optimizer step", **params}  # type: ignore[attr-defined]
    return scheduler


def optimization_record(optimizer: torch.optim.Optimizer, scheduler: Scheduler | None) -> dict[str, Any]:
    """The optimizer and schedule that actually run, as config.json records them."""
    group = optimizer.param_groups[0]
    hyper = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
    if "initial_lr" in group:  # a scheduler already applied its step-0 factor: record the peak rate
        hyper["lr"] = group["initial_lr"]
    hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in hyper.items() if _plain(v)}
    if scheduler is None:
        schedule: dict[str, Any] = {"name": "none"}
    else:
        schedule = getattr(scheduler, "description", None) or {"name": type(scheduler).__name__}
    return {"optimizer": {"name": type(optimizer).__name__, **hyper}, "schedule": schedule}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, tuple, list))
