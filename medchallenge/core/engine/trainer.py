"""The Trainer: a challenge's hooks around one shared ``fit`` (nnU-Net's run_training, timm's order)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medchallenge import __version__
from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, autocast, resolve_device, to_device
from medchallenge.core.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from medchallenge.core.engine.config import TrainConfig, options_record
from medchallenge.core.engine.loaders import Loaders
from medchallenge.core.engine.loop import StepState, evaluate, train_one_epoch
from medchallenge.core.engine.optim import build_optimizer, build_scheduler, optimization_record
from medchallenge.core.engine.position import EpochPosition, StopFlag, rng_state
from medchallenge.core.engine.runlog import RunLog, require_tensorboard
from medchallenge.core.engine.saver import CheckpointSaver
from medchallenge.core.engine.steplog import batch_len
from medchallenge.core.errors import OptionError, Preempted
from medchallenge.core.io import write_csv, write_json
from medchallenge.core.jsonio import strict_json
from medchallenge.core.provenance import data_record, run_record
from medchallenge.core.registry import Registry
from medchallenge.core.runs import link_latest
from medchallenge.core.seeding import epoch_seed, seed_everything
from medchallenge.core.splits import case_split


@dataclass
class _Run:
    """What one run's epochs share: the (wrapped and bare) model, loader, optimisation state, records."""

    model: nn.Module
    raw_model: nn.Module
    loader: DataLoader
    state: StepState
    runlog: RunLog
    saver: CheckpointSaver
    position: EpochPosition | None = None  # set when resuming inside an epoch
    last_save: float = field(default_factory=lambda: time.monotonic())


class Trainer:
    """The shared training loop; a challenge subclasses it and fills in the hooks.

    Required: ``model_spec`` (and ``registry``, or an own ``build_model``), ``train_dataset`` or
    ``train_loader``, ``training_step``, and either ``validate`` or ``val_loader`` +
    ``validation_step`` + ``aggregate_validation``. ``options`` (a dataclass of the challenge's own
    options) is recorded in config.json and the checkpoints by the engine.
    """

    challenge: str = ""
    monitor: str = "val_loss"
    monitor_mode: str = "max"  # "max" or "min"
    tiebreak: tuple[str, str] | None = None  # (metric, "max"|"min") between epochs with equal monitored values
    registry: Registry | None = None

    def __init__(self, config: TrainConfig, options: Any = None) -> None:
        self.config = config
        self.options = options
        self.run_dir = config.out
        self.device = torch.device("cpu")
        self.dist = DistInfo()
        self.amp_dtype: torch.dtype | None = None
        self.loaders = Loaders(config.seed, config.workers)
        self.epoch = 0
        self._stop = StopFlag()
        self._runlog: RunLog | None = None
        self._split: dict[str, Any] | None = None

    # ------------------------------------------------------------------ hooks
    def model_spec(self) -> dict[str, Any]:
        """The one description of the model: ``{"name": ..., "kwargs": {...}}`` (predict rebuilds from it)."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The bare model on the CPU; by default built from :meth:`model_spec` through ``registry``."""
        if self.registry is None:
            raise NotImplementedError(f"{type(self).__name__} needs a registry or its own build_model")
        return self.registry.build(self.model_spec())

    def prepare_model(self, model: nn.Module) -> None:
        """Load pretrained or transferred weights and freeze parameters (before the optimizer is built)."""

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``predict`` needs besides weights (classes, preprocessing); ``row`` is this epoch's metrics."""
        return {}

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def train_loader(self) -> DataLoader:
        """The training loader; by default a shuffled loader over :meth:`train_dataset`."""
        return self.loaders.train(self.train_dataset(), self.config.batch_size)

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Forward one batch (already on the device, under autocast) and return the loss."""
        raise NotImplementedError

    def val_loader(self) -> DataLoader | None:
        """The validation loader for the per-batch path (``None``: :meth:`validate` is called instead)."""
        return None

    def validation_step(self, model: nn.Module, batch: Any) -> Any:
        """One validation batch → whatever :meth:`aggregate_validation` needs (counts, predictions)."""
        raise NotImplementedError

    def aggregate_validation(self, outputs: list[Any]) -> dict[str, float]:
        """Reduce the outputs of :meth:`validation_step` to the metrics."""
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Score the model on the validation data (eval mode, no gradients), when not per batch."""
        return {}

    def configure_optimizers(
        self, model: nn.Module, steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """Optimizer and a per-step scheduler from the config's options (trainable parameters only)."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.config, params)
        return optimizer, build_scheduler(self.config, optimizer, steps_per_epoch)

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called before each epoch (0-based), e.g. for momentum ramps."""

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Called after each epoch's checkpoints are written (0-based epoch)."""

    def oof_rows(self, model: nn.Module) -> list[dict[str, Any]]:
        """Out-of-fold predictions: one row per validation case (``"id"`` plus what ``cv_score`` pools).

        Called once after the last epoch with best.pt's weights loaded (eval mode, no gradients,
        autocast); the engine writes the rows to RUN/oof.csv. The default writes nothing.
        """
        return []

    def preview_images(self, model: nn.Module) -> dict[str, Any]:
        """A few validation predictions as images for TensorBoard (``--tensorboard``), after validation.

        Returns tag → C×H×W float tensor in [0, 1] or H×W×C uint8 array (e.g. an image with the
        truth and the prediction overlaid, from :func:`medchallenge.core.preview.overlay`).
        """
        return {}

    # ------------------------------------------------------------- helpers
    def split_items(self, groups: Sequence[Any], strata: Sequence[Any] | None,
                    val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices (train, val) of the items: fold ``--fold`` of ``--n-folds``, else one ``val_fraction`` split.

        ``groups[i]`` is item i's case/patient/slide (never on both sides), ``strata[i]`` its label to
        stratify by. Seeded by ``--seed``; the engine writes the split (the group ids) to RUN/split.json.
        """
        cfg = self.config
        train, val = case_split(groups, strata, val_fraction, cfg.n_folds, cfg.fold, cfg.seed)
        names = [str(g) for g in groups]
        self._split = {"n_folds": cfg.n_folds, "fold": cfg.fold if cfg.n_folds else None, "seed": cfg.seed,
                       "val_fraction": None if cfg.n_folds else val_fraction,
                       "train": sorted({names[i] for i in train}), "val": sorted({names[i] for i in val})}
        return train, val

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision as configured (a no-op on CPU)."""
        with autocast(self.device, self.amp_dtype):
            yield

    def to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, self.config.channels_last)

    def batch_samples(self, batch: Any) -> int:
        """Samples in a training batch, for the logged samples/s: the leading size of its first tensor.
        Override where a batch is not stacked (detection: a list of images)."""
        return batch_len(batch)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def record_step(self, global_step: int, loss: float, lr: float) -> None:
        """Per-batch TensorBoard scalars (rank 0, ``--tensorboard``); called by the training loop."""
        if self._runlog is not None:
            self._runlog.step(global_step, loss, lr)

    # ----------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs; returns the best and last metrics and the run folder."""
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(self.device)
        self.loaders.bind(self.dist, self.device)
        self.amp_dtype = amp_dtype(self.device, cfg.amp)
        seed_everything(cfg.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        try:
            return self.run_training()
        finally:
            cleanup()

    def run_training(self) -> dict[str, Any]:
        """Set up model, data and optimizer, then epochs of train → validate → checkpoint.

        Everything an option can make fail (weights, ``--from``, data, optional extras) runs before
        the run folder is created, so a failed start leaves no orphan folder behind.
        """
        cfg = self.config
        self._check_run_dir()
        if cfg.tensorboard:
            require_tensorboard()
        model, raw_model = self._setup_model()
        loader = self.train_loader()
        state = self._setup_optimization(raw_model, len(loader))
        runlog = RunLog(self.run_dir, self.monitor, cfg.epochs, write=self.is_main, tensorboard=False)
        saver = CheckpointSaver(self.run_dir, self.monitor, self.monitor_mode, self.tiebreak)
        run = _Run(model, raw_model, loader, state, runlog, saver)
        start = self._resume(run) if cfg.resume else 0
        self._create_run_dir()
        log_handler = console.add_file_log(self.run_dir / "train.log") if self.is_main else None
        runlog.open_tensorboard(cfg.tensorboard)
        self._runlog = runlog
        self._stop.install()
        try:
            self._write_config(optimization_record(state.optimizer, state.scheduler))
            console.log(f"{self.challenge} run {self.run_dir}: {len(loader)} batches per epoch, epochs {start + 1}"
                        f"-{cfg.epochs}")
            for epoch in range(start, cfg.epochs):
                self._run_epoch(run, epoch)
            self._write_oof(run.raw_model)
            runlog.hparams({**self.config.to_json(), **options_record(self.options)}, {self.monitor: saver.best_value})
            # inside the try, so the run's train.log ends with it too
            console.log(f"best validation {self.monitor} {_shown(saver.best_value)}: {self.run_dir / 'best.pt'}")
        finally:
            self._stop.restore()
            runlog.close()
            if log_handler is not None:
                console.logger.removeHandler(log_handler)
                log_handler.close()
        return {"run_dir": str(self.run_dir), "best": {self.monitor: saver.best_value},
                "last": runlog.history[-1] if runlog.history else {}, "history": runlog.history}

    def _check_run_dir(self) -> None:
        """Refuse a folder that holds a run unless resuming, and a resume without last.pt (creates nothing)."""
        last = self.run_dir / "last.pt"
        if self.is_main:
            if last.exists() and not self.config.resume:
                raise OptionError(
                    f"{self.run_dir} already holds a run (last.pt): continue it with --resume {self.run_dir}, or give another --out"
                )
            if self.config.resume and not last.exists():
                raise OptionError(f"--resume: {last} not found, nothing to resume")
        barrier()

    def _create_run_dir(self) -> None:
        if self.is_main:
            (self.run_dir / "plots").mkdir(parents=True, exist_ok=True)
            link_latest(self.run_dir)
            if self._split is not None:
                write_json(self.run_dir / "split.json", self._split)
        barrier()

    def _setup_model(self) -> tuple[nn.Module, nn.Module]:
        """Build → prepare (pretrained, freezing) → device → channels_last → compile → DDP (timm's order)."""
        cfg = self.config
        console.log(
            f"{self.challenge} train → {self.run_dir} on {self.device}"
            f" (amp={self.amp_dtype}, world_size={self.dist.world_size}, seed={cfg.seed})"
        )
        raw_model = self.build_model()
        self.prepare_model(raw_model)
        raw_model = raw_model.to(self.device)
        if cfg.channels_last:
            raw_model = raw_model.to(memory_format=torch.channels_last)
        model: nn.Module = raw_model
        if cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        n_train = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in raw_model.parameters())
        console.log(f"model {self.model_spec()['name']}: {n_train:,} trainable / {n_all:,} parameters")
        return model, raw_model

    def _setup_optimization(self, raw_model: nn.Module, n_batches: int) -> StepState:
        steps_per_epoch = max(1, math.ceil(n_batches / self.config.accumulate))
        optimizer, scheduler = self.configure_optimizers(raw_model, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        return StepState(optimizer, scheduler, scaler)

    def _resume(self, run: _Run) -> int:
        """Load last.pt into the model, optimizer, scheduler and scaler; returns the epochs done.

        A last.pt saved inside an epoch (pre-emption, --checkpoint-every) also sets ``run.position``.
        """
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path, challenge=self.challenge, map_location=self.device)
        load_state_dict_checked(run.raw_model, ckpt["state_dict"], path)
        train_state = ckpt["train_state"]
        run.state.optimizer.load_state_dict(train_state["optimizer"])
        if run.state.scheduler is not None and train_state.get("scheduler") is not None:
            run.state.scheduler.load_state_dict(train_state["scheduler"])
        if run.state.scaler is not None and train_state.get("scaler") is not None:
            run.state.scaler.load_state_dict(train_state["scaler"])
        done = int(ckpt["epoch"])
        run.saver.best_value = train_state.get("best_value")
        run.saver.best_tiebreak = train_state.get("best_tiebreak")
        run.runlog.restore(train_state.get("history", []), done)
        if train_state.get("position") is not None:
            run.position = EpochPosition.from_state(train_state["position"])
            console.log(f"resumed from {path} in epoch {done + 1} after step {run.position.batches_done}")
        else:
            console.log(f"resumed from {path} after epoch {done}")
        return done

    def record(self) -> dict[str, Any]:
        """What config.json and every checkpoint record about the run's options."""
        return {"challenge": self.challenge, "version": __version__, "monitor": self.monitor,
                "monitor_mode": self.monitor_mode,
                "world_size": self.dist.world_size, **self.config.to_json(),
                "options": options_record(self.options)}

    def _write_config(self, optimization: dict[str, Any]) -> None:
        if self.is_main:
            provenance = run_record(self.device, self.amp_dtype)
            data = data_record(self.options)
            write_json(self.run_dir / "config.json",
                       {**self.record(), **optimization, "data": data, "provenance": provenance})
        barrier()

    def _run_epoch(self, run: _Run, epoch: int) -> None:
        cfg = self.config
        self.epoch = epoch
        self._reseed(epoch)
        self.on_epoch_start(epoch, run.raw_model, run.state.optimizer)
        started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        position, run.position = run.position, None
        train_loss, rate, waiting = train_one_epoch(self, run.model, run.loader, run.state, epoch, position,
                                     lambda reached: self._after_step(run, reached))
        train_loss = all_reduce_mean(train_loss, self.device)  # the loss of every rank's batches, not rank 0's
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss,
                               "lr": run.state.optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            metrics = evaluate(self, run.raw_model) if self.is_main else {}
            row.update(broadcast_object(metrics))  # every rank agrees on the metrics
            if run.runlog.writer is not None:
                run.raw_model.eval()
                with torch.no_grad(), self.autocast():
                    run.runlog.images(epoch + 1, self.preview_images(run.raw_model))
        row["time_s"] = round(time.perf_counter() - started, 3)
        row["train_samples_per_s"] = round(rate * self.dist.world_size, 2)  # over all ranks
        row["data_wait_share"] = round(waiting, 4)  # > 0.05 on a GPU: more --workers (docs/performance.md)
        if self.device.type == "cuda":
            row["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        improved = run.saver.improves(row)
        run.runlog.history.append(row)
        if self.is_main:
            run.saver.save(lambda: self._payload(run.raw_model, epoch + 1, row), self._train_state(run), improved)
        run.runlog.history.pop()
        run.runlog.add(row, improved)
        run.last_save = time.monotonic()
        barrier()
        self.on_epoch_end(epoch, row)

    def _write_oof(self, raw_model: nn.Module) -> None:
        """RUN/oof.csv: the validation predictions of best.pt's weights (rank 0; the model is restored after)."""
        best = self.run_dir / "best.pt"
        if not self.is_main or not best.is_file():
            return
        current = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
        raw_model.load_state_dict(load_checkpoint(best, map_location=self.device)["state_dict"])
        raw_model.eval()
        with torch.no_grad(), self.autocast():
            rows = self.oof_rows(raw_model)
        raw_model.load_state_dict(current)
        if rows:
            frame = pd.DataFrame(strict_json(rows))
            frame.insert(1, "fold", self.config.fold if self.config.n_folds else -1)
            write_csv(self.run_dir / "oof.csv", frame)
            console.log(f"out-of-fold predictions of {len(frame)} validation case(s): {self.run_dir / 'oof.csv'}")

    def _train_state(self, run: _Run) -> dict[str, Any]:
        state = run.state
        return {"optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
                "scaler": state.scaler.state_dict() if state.scaler is not None else None,
                "history": run.runlog.json_history()}

    def _after_step(self, run: _Run, position: EpochPosition) -> None:
        """After an optimizer step: save the position when pre-empted or --checkpoint-every is due."""
        every = self.config.checkpoint_every
        due = every is not None and time.monotonic() - run.last_save >= every * 60
        stop = all_reduce_max(float(self._stop.signal is not None), self.device) > 0  # every rank stops together
        if not (stop or due):
            return
        position.rng = rng_state()
        if self.is_main:
            train_state = {**self._train_state(run), "position": position.to_state()}
            run.saver.save_last(lambda: self._payload(run.raw_model, position.epoch, {}), train_state)
        barrier()
        run.last_save = time.monotonic()
        where = f"epoch {position.epoch + 1}, step {position.batches_done}/{len(run.loader)}"
        if stop:
            raise Preempted(f"signal received: saved {self.run_dir / 'last.pt'} at {where};"
                            f" continue with --resume {self.run_dir}")
        console.log(f"saved {self.run_dir / 'last.pt'} at {where} (--checkpoint-every)")

    def _payload(self, raw_model: nn.Module, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        state_dict = {k: v.detach().cpu() for k, v in raw_model.state_dict().items()}
        return {
            "challenge": self.challenge,
            "model": self.model_spec(),
            "state_dict": state_dict,
            "meta": strict_json(self.checkpoint_meta(row)),
            "config": self.record(),
            "epoch": epoch,
            "metrics": strict_json(row),
            "monitor": self.monitor,
        }

    def _reseed(self, epoch: int) -> None:
        seed = epoch_seed(self.config.seed, epoch, self.dist.rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.loaders.set_epoch(epoch)


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
