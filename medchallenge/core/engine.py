"""One training loop for every challenge, with per-challenge hooks.

A challenge subclasses :class:`Trainer` and fills in a few hooks (nnU-Net style)::

    class PandaTrainer(Trainer):
        challenge = "panda"
        monitor = "qwk"                      # the validation metric that picks best.pt
        def build_model(self): ...           # -> nn.Module
        def model_spec(self): ...            # -> {"name": ..., "kwargs": ...} to rebuild it
        def train_loader(self): ...          # -> DataLoader (use self.make_loader)
        def training_step(self, model, batch): ...   # -> scalar loss (batch already on device)
        def validate(self, model): ...       # -> {"qwk": ..., ...}

The engine does the rest, in timm's order (model to device → channels_last → compile → DDP):
AMP on CUDA (bf16 where supported, else fp16 with a GradScaler), gradient accumulation and
clipping, warm-up + cosine (or step) schedules, best-by-metric and last checkpoints written
atomically, ``--resume`` from ``last.pt``, abort on a non-finite loss, seed + rank seeding with
per-epoch reseeding (a resumed run replays the same epochs), DDP under torchrun with rank-0
writes and ``DistributedSampler.set_epoch``, and the run dir: ``config.json``, ``metrics.csv``,
``train.log``, ``last.pt``, ``best.pt``, ``plots/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from medchallenge import __version__
from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, save_checkpoint
from medchallenge.core.device import amp_dtype, autocast, resolve_device, to_device
from medchallenge.core.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from medchallenge.core.errors import OptionError, TrainingError
from medchallenge.core.io import write_csv, write_json
from medchallenge.core.jsonio import strict_json
from medchallenge.core.plots import plot_training_curves
from medchallenge.core.seeding import epoch_seed, seed_everything, seed_worker


@dataclass
class TrainConfig:
    """Options every challenge's ``train`` shares (the challenge adds its own in ``extra``)."""

    out: Path
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | none
    warmup_epochs: float = 0.0
    step_size: int = 10  # epochs between ×gamma steps (scheduler "step")
    gamma: float = 0.1
    accumulate: int = 1
    grad_clip: float | None = None
    amp: bool = True
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    resume: bool = False
    val_every: int = 1
    tensorboard: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        return data


def _json_safe(obj: Any) -> Any:
    return strict_json(obj)


class Trainer:
    """The shared training loop; subclass it and fill in the hooks below."""

    challenge: str = ""
    monitor: str = "val_loss"
    monitor_mode: str = "max"  # "max" or "min"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.run_dir = Path(config.out)
        self.device = torch.device("cpu")
        self.dist = DistInfo()
        self.amp_dtype: torch.dtype | None = None
        self._samplers: list[Sampler] = []
        self._generators: list[torch.Generator] = []
        self.epoch = 0

    # ------------------------------------------------------------------ hooks
    def build_model(self) -> nn.Module:
        """Return the bare model (on the CPU)."""
        raise NotImplementedError

    def model_spec(self) -> dict[str, Any]:
        """How ``predict`` rebuilds the model: ``{"name": ..., "kwargs": {...}}``."""
        raise NotImplementedError

    def checkpoint_meta(self) -> dict[str, Any]:
        """What ``predict`` needs besides weights: classes, preprocessing parameters, ..."""
        return {}

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def train_loader(self) -> DataLoader:
        """The training loader; by default a shuffled loader over :meth:`train_dataset`."""
        return self.make_loader(self.train_dataset(), shuffle=True, drop_last=True)

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Forward one batch (already on the device, under autocast) and return the loss."""
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Score the model on the validation data (called in eval mode, without gradients)."""
        return {}

    def configure_optimizers(
        self, model: nn.Module, steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """Optimizer and a per-step scheduler from the config's options."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.config, params)
        scheduler = build_scheduler(self.config, optimizer, steps_per_epoch)
        return optimizer, scheduler

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called before each epoch (0-based), e.g. for momentum ramps or freezing."""

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Called after each epoch's checkpoints are written (0-based epoch)."""

    # ------------------------------------------------------------- helpers
    def make_loader(
        self,
        dataset: Dataset,
        *,
        shuffle: bool,
        batch_size: int | None = None,
        drop_last: bool = False,
        collate_fn: Callable | None = None,
        sampler: Sampler | None = None,
        distributed: bool = True,
        batch_sampler: Sampler | None = None,
    ) -> DataLoader:
        """A DataLoader with seeded workers and shuffling, a DistributedSampler under DDP.

        Shuffling and worker seeds are reseeded at every epoch from (seed, epoch, rank).
        """
        batch_size = batch_size or self.config.batch_size
        generator = torch.Generator()
        generator.manual_seed(self.config.seed)
        if shuffle:  # only training loaders are reseeded per epoch
            self._generators.append(generator)
        if sampler is None and distributed and self.dist.enabled:
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=self.config.seed, drop_last=drop_last)
            shuffle = False
        if sampler is not None:
            self._samplers.append(sampler)
            shuffle = False
        workers = self.config.workers
        if batch_sampler is not None:  # variable-size batches (bags); it shards and reseeds itself
            if hasattr(batch_sampler, "set_epoch"):
                self._samplers.append(batch_sampler)
            return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=workers,
                              pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker, generator=generator,
                              persistent_workers=workers > 0)
        if len(dataset) < batch_size and drop_last:  # type: ignore[arg-type]
            drop_last = False
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=collate_fn,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=generator,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision as configured (a no-op on CPU)."""
        with autocast(self.device, self.amp_dtype):
            yield

    def to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, self.config.channels_last)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # ----------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs; returns the best and last metrics and paths."""
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(self.device)
        self.amp_dtype = amp_dtype(self.device, cfg.amp)
        seed_everything(cfg.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        try:
            return self._fit()
        finally:
            cleanup()

    def _prepare_run_dir(self) -> None:
        last = self.run_dir / "last.pt"
        if self.is_main:
            if last.exists() and not self.config.resume:
                raise OptionError(
                    f"{self.run_dir} already holds a run (last.pt): pass --resume to continue it, or another --out"
                )
            if self.config.resume and not last.exists():
                raise OptionError(f"--resume: {last} not found, nothing to resume")
            (self.run_dir / "plots").mkdir(parents=True, exist_ok=True)
            config = {
                "challenge": self.challenge,
                "version": __version__,
                "monitor": self.monitor,
                "world_size": self.dist.world_size,
                **self.config.to_json(),
            }
            write_json(self.run_dir / "config.json", _json_safe(config))
        barrier()

    def _fit(self) -> dict[str, Any]:
        self._prepare_run_dir()
        log_handler = console.add_file_log(self.run_dir / "train.log") if self.is_main else None
        try:
            return self._loop()
        finally:
            if log_handler is not None:
                console.logger.removeHandler(log_handler)
                log_handler.close()

    def _loop(self) -> dict[str, Any]:
        cfg = self.config
        console.log(
            f"{self.challenge} train → {self.run_dir} on {self.device}"
            f" (amp={self.amp_dtype}, world_size={self.dist.world_size}, seed={cfg.seed})"
        )
        raw_model = self.build_model().to(self.device)
        if cfg.channels_last:
            raw_model = raw_model.to(memory_format=torch.channels_last)
        model: nn.Module = raw_model
        if cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

        loader = self.train_loader()
        steps_per_epoch = max(1, math.ceil(len(loader) / cfg.accumulate))
        optimizer, scheduler = self.configure_optimizers(raw_model, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        n_train = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in raw_model.parameters())
        console.log(f"model: {n_train:,} trainable / {n_all:,} parameters; {len(loader)} batches per epoch")

        history: list[dict[str, Any]] = []
        best_value: float | None = None
        start_epoch = 0
        if cfg.resume:
            state = load_checkpoint(self.run_dir / "last.pt", challenge=self.challenge, map_location=self.device)
            raw_model.load_state_dict(state["state_dict"])
            train_state = state["train_state"]
            optimizer.load_state_dict(train_state["optimizer"])
            if scheduler is not None and train_state.get("scheduler") is not None:
                scheduler.load_state_dict(train_state["scheduler"])
            if scaler is not None and train_state.get("scaler") is not None:
                scaler.load_state_dict(train_state["scaler"])
            start_epoch = int(state["epoch"])
            best_value = train_state.get("best_value")
            history = list(train_state.get("history", []))[:start_epoch]
            console.log(f"resumed from {self.run_dir / 'last.pt'} after epoch {start_epoch}")

        writer = self._tensorboard()
        for epoch in range(start_epoch, cfg.epochs):
            self.epoch = epoch
            self._reseed(epoch)
            self.on_epoch_start(epoch, raw_model, optimizer)
            started = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            train_loss = self._train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch)
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
                metrics: dict[str, float] = {}
                if self.is_main:
                    raw_model.eval()
                    with torch.no_grad():
                        metrics = self.validate(raw_model)
                metrics = broadcast_object(metrics)  # type: ignore[assignment]
                row.update(metrics)
            row["time_s"] = round(time.perf_counter() - started, 3)
            if self.device.type == "cuda":
                row["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
            history.append(row)

            value = row.get(self.monitor)
            improved = value is not None and math.isfinite(float(value)) and (
                best_value is None
                or (float(value) > best_value if self.monitor_mode == "max" else float(value) < best_value)
            )
            if improved:
                best_value = float(value)  # type: ignore[arg-type]
            if self.is_main:
                payload = self._payload(raw_model, epoch + 1, row)
                if improved or not (self.run_dir / "best.pt").exists():
                    save_checkpoint(self.run_dir / "best.pt", payload)
                train_state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "best_value": best_value,
                    "history": _json_safe(history),
                }
                save_checkpoint(self.run_dir / "last.pt", {**payload, "train_state": train_state})
                write_csv(self.run_dir / "metrics.csv", pd.DataFrame(history))
                plot_training_curves(history, self.run_dir / "plots", monitor=self.monitor)
                if writer is not None:
                    for key, val in row.items():
                        if isinstance(val, (int, float)) and key != "epoch":
                            writer.add_scalar(key, val, epoch + 1)
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "epoch")
                console.log(f"epoch {epoch + 1}/{cfg.epochs}: {shown}{' *' if improved else ''}")
            barrier()
            self.on_epoch_end(epoch, row)

        if writer is not None:
            writer.close()
        return {
            "run_dir": str(self.run_dir),
            "best": {self.monitor: best_value},
            "last": history[-1] if history else {},
            "history": history,
        }

    def _payload(self, raw_model: nn.Module, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        state_dict = {k: v.detach().cpu() for k, v in raw_model.state_dict().items()}
        return {
            "challenge": self.challenge,
            "model": self.model_spec(),
            "state_dict": state_dict,
            "meta": _json_safe(self.checkpoint_meta()),
            "config": _json_safe(self.config.to_json()),
            "epoch": epoch,
            "metrics": _json_safe(row),
            "monitor": self.monitor,
        }

    def _reseed(self, epoch: int) -> None:
        seed = epoch_seed(self.config.seed, epoch, self.dist.rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        for generator in self._generators:
            generator.manual_seed(epoch_seed(self.config.seed, epoch, 0))
        for sampler in self._samplers:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def _train_one_epoch(
        self,
        model: nn.Module,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        scaler: torch.amp.GradScaler | None,
        epoch: int,
    ) -> float:
        cfg = self.config
        model.train()
        optimizer.zero_grad(set_to_none=True)
        total, count = 0.0, 0
        n_batches = len(loader)
        for step, batch in enumerate(console.track(loader, f"epoch {epoch + 1}/{cfg.epochs}", total=n_batches)):
            batch = self.to_device(batch)
            boundary = (step + 1) % cfg.accumulate == 0 or step + 1 == n_batches
            sync = contextlib.nullcontext()
            if self.dist.enabled and not boundary and hasattr(model, "no_sync"):
                sync = model.no_sync()  # type: ignore[operator]
            with sync:
                with self.autocast():
                    loss = self.training_step(model, batch)
                loss_value = float(loss.detach().float().item())
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"non-finite loss ({loss_value}) at epoch {epoch + 1}, step {step + 1}: training stopped;"
                        f" lower --lr or disable AMP; the last good checkpoint is {self.run_dir / 'last.pt'}"
                    )
                scaled = loss / cfg.accumulate
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            if boundary:
                if cfg.grad_clip:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if scheduler is not None:
                    scheduler.step()
            total += loss_value
            count += 1
        return total / max(count, 1)

    def _tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise OptionError("--tensorboard needs the optional extra: pip install 'medchallenge[tensorboard]'") from err
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step LambdaLR: linear warm-up then cosine to 0, a step decay, or none."""
    name = config.scheduler.lower()
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = max(1, config.epochs * steps_per_epoch)
    if name == "none":
        if warmup == 0:
            return None
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    if name == "step":
        every = max(1, config.step_size * steps_per_epoch)
        gamma = config.gamma
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (min(1.0, (s + 1) / warmup) if s < warmup else 1.0) * gamma ** (s // every)
        )
    raise OptionError(f"--scheduler {config.scheduler}: expected cosine, step or none")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor at ``step``: linear from ~0 to 1 over the warm-up, then cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
