"""DataLoaders that know training from evaluation.

Training loaders shuffle, are sharded under DDP and are reseeded at every epoch from
(seed, epoch, rank), so a resumed run replays the epochs an uninterrupted run would. Evaluation
loaders are never sharded (rank 0 validates the whole set) and never reseeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from medchallenge.core.distributed import DistInfo
from medchallenge.core.seeding import epoch_seed, seed_worker


class Loaders:
    """Builds the run's loaders and reseeds the training ones each epoch."""

    def __init__(self, seed: int, workers: int) -> None:
        self.seed = seed
        self.workers = workers
        self.dist = DistInfo()
        self.pin_memory = False
        self._generators: list[torch.Generator] = []
        self._samplers: list[Any] = []

    def bind(self, dist: DistInfo, device: torch.device) -> None:
        """Called by the engine once the device and the process group are known."""
        self.dist = dist
        self.pin_memory = device.type == "cuda"

    def generator(self) -> torch.Generator:
        """A generator seeded from the run's seed, reseeded every epoch (for custom samplers)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        self._generators.append(generator)
        return generator

    def reseeded(self, sampler: Any) -> Any:
        """Register a sampler (or batch sampler) whose ``set_epoch`` is called every epoch."""
        if hasattr(sampler, "set_epoch"):
            self._samplers.append(sampler)
        return sampler

    def set_epoch(self, epoch: int) -> None:
        for generator in self._generators:
            generator.manual_seed(epoch_seed(self.seed, epoch, 0))
        for sampler in self._samplers:
            sampler.set_epoch(epoch)

    def train(self, dataset: Dataset, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
              collate_fn: Callable | None = None, sampler: Sampler | None = None,
              batch_sampler: Sampler | None = None) -> DataLoader:
        """A training loader: shuffled, sharded under DDP, reseeded every epoch.

        ``sampler``/``batch_sampler`` replace the default shuffling; a batch sampler shards itself.
        """
        generator = self.generator()
        if batch_sampler is not None:
            return self._loader(dataset, generator, batch_sampler=self.reseeded(batch_sampler), collate_fn=collate_fn)
        if sampler is None and self.dist.enabled:
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=self.seed, drop_last=drop_last)
        if sampler is not None:
            self.reseeded(sampler)
            shuffle = False
        if len(dataset) < batch_size and drop_last:  # type: ignore[arg-type]
            drop_last = False  # a tiny training set still gives one batch
        return self._loader(dataset, generator, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                            drop_last=drop_last, collate_fn=collate_fn)

    def eval(self, dataset: Dataset, batch_size: int, *, collate_fn: Callable | None = None,
             batch_sampler: Sampler | None = None) -> DataLoader:
        """An evaluation loader: in order, the whole set on this rank, never reseeded."""
        generator = torch.Generator().manual_seed(self.seed)
        if batch_sampler is not None:
            return self._loader(dataset, generator, batch_sampler=batch_sampler, collate_fn=collate_fn)
        return self._loader(dataset, generator, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)

    def _loader(self, dataset: Dataset, generator: torch.Generator, **kwargs: Any) -> DataLoader:
        workers = self.workers
        if workers > 0 and kwargs.get("batch_sampler") is None:
            kwargs["prefetch_factor"] = 4
        return DataLoader(dataset, num_workers=workers, pin_memory=self.pin_memory, worker_init_fn=seed_worker,
                          generator=generator, persistent_workers=workers > 0, **kwargs)
