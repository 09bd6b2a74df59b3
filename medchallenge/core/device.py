"""Device choice and mixed precision: ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from medchallenge.core.errors import OptionError


def fit_threads() -> int:
    """Limit PyTorch's CPU threads to the CPUs this process may run on; returns the thread count.

    PyTorch starts one thread per physical core of the node, whatever the batch scheduler granted:
    a job given 4 CPUs of a 64-core node (Slurm ``--cpus-per-task 4`` sets the process's CPU
    affinity) would run 32 threads on 4 CPUs, several times slower than 4 threads. An explicit
    ``OMP_NUM_THREADS`` (torchrun sets it to 1 per rank) is left as it is.
    """
    if "OMP_NUM_THREADS" in os.environ or not hasattr(os, "sched_getaffinity"):
        return torch.get_num_threads()
    allowed = max(1, len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if allowed < torch.get_num_threads():
        torch.set_num_threads(allowed)
    return torch.get_num_threads()


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device, checking it exists.

    Under torchrun, ``auto`` and ``cuda`` mean the GPU of this process's LOCAL_RANK. Every train
    and predict resolves its device first, so this is also where the CPU threads are fitted to the
    CPUs granted (:func:`fit_threads`).
    """
    fit_threads()
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise OptionError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            index = int(os.environ.get("LOCAL_RANK", "0"))
        else:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError as err:
                raise OptionError(f"--device {spec}: expected cuda:N with N an integer") from err
        if index >= torch.cuda.device_count():
            raise OptionError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if spec == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    raise OptionError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs that support it, else fp16; None on CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``; a no-op when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a nested batch (tuple, list, dict) to ``device``.

    With ``channels_last``, 4-D floating tensors (images N×C×H×W) take that memory format.
    """
    if isinstance(batch, torch.Tensor):
        out = batch.to(device, non_blocking=True)
        if channels_last and out.ndim == 4 and out.is_floating_point():
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device, channels_last) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch
