"""One training engine for every challenge, in small parts.

- :mod:`.config`   TrainConfig, the typed options every ``train`` shares, and their record
- :mod:`.optim`    optimizers and per-step schedules (with a description config.json records)
- :mod:`.loaders`  training loaders (sharded, reseeded per epoch) and evaluation loaders (never)
- :mod:`.saver`    last.pt every epoch, best.pt by the monitored metric, atomically
- :mod:`.runlog`   metrics.csv, plots, train.log lines, TensorBoard
- :mod:`.loop`     ``train_one_epoch`` and ``evaluate`` (whole or per-batch validation)
- :mod:`.trainer`  the Trainer: a challenge's hooks around one ``fit``

A challenge subclasses :class:`Trainer` (see docs/architecture.md for the contract)::

    class KitsTrainer(Trainer):
        challenge, monitor, registry = "kits", "dice_mean", MODELS
        def model_spec(self): ...            # {"name": ..., "kwargs": ...}; build_model builds it
        def train_dataset(self): ...
        def training_step(self, model, batch): ...   # -> scalar loss
        def validate(self, model): ...       # -> {"dice_mean": ..., ...}
"""

from medchallenge.core.engine.config import TrainConfig
from medchallenge.core.engine.optim import build_optimizer, build_scheduler, warmup_cosine
from medchallenge.core.engine.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "build_optimizer", "build_scheduler", "warmup_cosine"]
