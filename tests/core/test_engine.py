"""The shared engine on a toy task: learns, checkpoints, resumes exactly, stops on NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medchallenge.core.checkpoint import load_checkpoint
from medchallenge.core.engine import TrainConfig, Trainer, build_scheduler, warmup_cosine
from medchallenge.core.errors import DataError, OptionError, TrainingError


def _data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)


class ToyTrainer(Trainer):
    challenge = "toy"
    monitor = "accuracy"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))

    def model_spec(self) -> dict:
        return {"name": "mlp", "kwargs": {}}

    def train_dataset(self):
        return _data()

    def training_step(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def validate(self, model):
        x, y = _data(32, seed=1).tensors
        return {"accuracy": float((model(x).argmax(1) == y).float().mean())}


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(out=out, epochs=3, batch_size=8, lr=0.05, device="cpu", seed=3, warmup_epochs=1)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_writes_run_dir_and_learns(tmp_path: Path) -> None:
    result = ToyTrainer(_config(tmp_path / "run")).fit()
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "train.log", "last.pt", "best.pt", "plots/loss.png", "plots/metrics.png"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert result["best"]["accuracy"] > 0.8
    best = load_checkpoint(run / "best.pt", challenge="toy", models=["mlp"])
    assert best["metrics"]["accuracy"] == metrics["accuracy"].max()
    assert "train_state" in load_checkpoint(run / "last.pt")
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    # the one end-of-run summary line, logged by the engine (the CLIs no longer echo their own)
    summary = [line for line in (run / "train.log").read_text().splitlines() if "best validation" in line]
    assert len(summary) == 1 and summary[0].endswith(f"best validation accuracy {metrics['accuracy'].max():.4f}:"
                                                      f" {run / 'best.pt'}"), summary


def test_resume_replays_the_same_epochs(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "full")).fit()

    class Killed(ToyTrainer):
        def on_epoch_end(self, epoch, row):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Killed(_config(tmp_path / "part")).fit()
    assert len(pd.read_csv(tmp_path / "part" / "metrics.csv")) == 1
    ToyTrainer(_config(tmp_path / "part", resume=True)).fit()
    full = pd.read_csv(tmp_path / "full" / "metrics.csv")
    part = pd.read_csv(tmp_path / "part" / "metrics.csv")
    timings = ["time_s", "train_samples_per_s", "data_wait_share"]
    pd.testing.assert_frame_equal(full.drop(columns=timings), part.drop(columns=timings))
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(OptionError, match="--resume"):
        ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(OptionError, match="nothing to resume"):
        ToyTrainer(_config(tmp_path / "other", resume=True)).fit()


def test_non_finite_loss_stops(tmp_path: Path) -> None:
    class Diverges(ToyTrainer):
        def training_step(self, model, batch):
            return super().training_step(model, batch) * float("nan")

    with pytest.raises(TrainingError, match="non-finite loss"):
        Diverges(_config(tmp_path / "run")).fit()


class Deterministic(ToyTrainer):
    """No dropout and no shuffling: a run is a fixed sequence of batches, for exact comparisons."""

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def train_loader(self):
        return self.loaders.train(self.train_dataset(), self.config.batch_size, shuffle=False)

    def on_epoch_end(self, epoch, row):
        self._final_state = self._model_ref.state_dict()

    def prepare_model(self, model):
        self._model_ref = model


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["state_dict"]


def test_accumulate_2_at_batch_b_equals_batch_2b(tmp_path: Path) -> None:
    kw = dict(epochs=2, optimizer="sgd", momentum=0.0, scheduler="none", warmup_epochs=0, lr=0.1)
    Deterministic(_config(tmp_path / "acc", batch_size=8, accumulate=2, **kw)).fit()
    Deterministic(_config(tmp_path / "big", batch_size=16, **kw)).fit()
    Deterministic(_config(tmp_path / "small", batch_size=8, **kw)).fit()
    acc, big, small = _weights(tmp_path / "acc"), _weights(tmp_path / "big"), _weights(tmp_path / "small")
    for key in acc:
        torch.testing.assert_close(acc[key], big[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(acc[k], small[k]) for k in acc)  # accumulation changes the result


def test_step_schedule_learning_rates(tmp_path: Path) -> None:
    # 64 samples, batch 8 → 8 steps per epoch; step_size 1 epoch, gamma 0.5; lr logged after each epoch
    result = ToyTrainer(_config(tmp_path / "run", scheduler="step", step_size=1, gamma=0.5, warmup_epochs=0,
                                lr=0.08)).fit()
    assert [row["lr"] for row in result["history"]] == pytest.approx([0.04, 0.02, 0.01])
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["schedule"] == {"name": "step", "unit": "optimizer step", "warmup_steps": 0,
                                  "step_every_steps": 8, "gamma": 0.5}
    assert record["optimizer"]["name"] == "Adam" and record["optimizer"]["lr"] == 0.08


def test_step_schedule_with_warmup_per_step() -> None:
    model = nn.Linear(2, 2)
    cfg = TrainConfig(out=Path("unused"), epochs=3, lr=1.0, scheduler="step", step_size=1, gamma=0.1,
                      warmup_epochs=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


def test_eval_loader_is_never_sharded_or_reseeded(tmp_path: Path) -> None:
    from medchallenge.core.distributed import DistInfo

    trainer = ToyTrainer(_config(tmp_path / "run"))
    trainer.loaders.bind(DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cpu"))
    val = trainer.loaders.eval(_data(10), batch_size=4)
    assert [len(b[0]) for b in val] == [4, 4, 2]  # the whole set on rank 1, in order
    assert trainer.loaders._samplers == [] and trainer.loaders._generators == []


def test_bad_optimizer_or_scheduler_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--optimizer lion"):
        _config(tmp_path / "run", optimizer="lion")
    with pytest.raises(OptionError, match="--scheduler poly"):
        _config(tmp_path / "run", scheduler="poly")


def test_config_records_options_and_meta_sees_the_row(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class ToyOptions:
        width: int = 16
        data: Path = Path("/data/toy")

    class WithMeta(ToyTrainer):
        def checkpoint_meta(self, row=None):
            return {"seen_accuracy": None if row is None else row.get("accuracy")}

    WithMeta(_config(tmp_path / "run", epochs=1), ToyOptions()).fit()
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["options"] == {"width": 16, "data": "/data/toy"}
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["meta"]["seen_accuracy"] == best["metrics"]["accuracy"]
    assert best["config"]["options"]["width"] == 16


def test_other_challenge_checkpoint_rejected(tmp_path: Path) -> None:
    ToyTrainer(_config(tmp_path / "run", epochs=1)).fit()
    with pytest.raises(DataError, match="challenge 'toy'"):
        load_checkpoint(tmp_path / "run" / "best.pt", challenge="panda")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((tmp_path / "run" / "best.pt").read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt"):
        load_checkpoint(bad)


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_batch_log_lines_say_where_the_epoch_is(tmp_path: Path) -> None:
    import re

    ToyTrainer(_config(tmp_path / "run", epochs=2, log_every=0.0)).fit()
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 16  # 8 batches × 2 epochs, one line each with --log-every 0
    pattern = (r".* epoch 2/2 step 8/8 loss [0-9.e-]+ lr [0-9.e-]+ [0-9.]+ samples/s data-wait \d+% "
               r"eta 0m00s \(run 0m00s\)")
    assert re.fullmatch(pattern, steps[-1]), steps[-1]
    assert re.fullmatch(r".* epoch 1/2 step 1/8 .* eta \d+m\d\ds \(run \d+m\d\ds\)", steps[0]), steps[0]


def test_tiebreak_decides_between_epochs_with_equal_monitored_values(tmp_path: Path) -> None:
    from medchallenge.core.engine.saver import CheckpointSaver

    plain = CheckpointSaver(tmp_path, "ba")
    broken = CheckpointSaver(tmp_path, "ba", tiebreak=("auc", "max"))
    rows = [{"ba": 1.0, "auc": 0.7}, {"ba": 1.0, "auc": 0.9}, {"ba": 1.0, "auc": 0.8}, {"ba": 0.9, "auc": 1.0}]
    assert [plain.improves(r) for r in rows] == [True, False, False, False]  # the earliest perfect epoch wins
    assert [broken.improves(r) for r in rows] == [True, True, False, False]  # the better-ranked one wins
    assert broken.best_state() == {"best_value": 1.0, "best_tiebreak": 0.9}
    by_loss = CheckpointSaver(tmp_path, "ba", tiebreak=("val_loss", "min"))
    assert [by_loss.improves(r) for r in ({"ba": 1, "val_loss": 0.5}, {"ba": 1, "val_loss": 0.4})] == [True, True]


def test_every_epoch_row_says_how_long_the_loop_waited_for_data(tmp_path: Path) -> None:
    class Slow(ToyTrainer):
        def train_loader(self):
            import time

            def slow(batch):
                time.sleep(0.05)  # a loader slower than the step: most of the epoch is waiting
                return torch.utils.data.default_collate(batch)

            return self.loaders.train(self.train_dataset(), self.config.batch_size, collate_fn=slow)

    Slow(_config(tmp_path / "run", epochs=1)).fit()
    share = pd.read_csv(tmp_path / "run" / "metrics.csv")["data_wait_share"].iloc[0]
    assert 0.2 < share <= 1.0


def test_samples_per_s_counts_what_batch_samples_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A detection batch (a list of images) is not stacked: the Trainer's batch_samples hook counts it."""
    from medchallenge.core.engine import steplog

    counted: list[int] = []
    update = steplog.StepLog.update

    def spy(self, step, loss, lr, samples, wait):  # noqa: ANN001, ANN202
        counted.append(samples)
        return update(self, step, loss, lr, samples, wait)

    monkeypatch.setattr(steplog.StepLog, "update", spy)
    ToyTrainer(_config(tmp_path / "a", epochs=1)).fit()
    assert counted == [8] * 8  # default: the leading size of the first tensor

    class ListBatches(ToyTrainer):
        def batch_samples(self, batch):  # noqa: ANN001, ANN202
            return 3 * len(batch[0])

    counted.clear()
    ListBatches(_config(tmp_path / "b", epochs=1)).fit()
    assert counted == [24] * 8
