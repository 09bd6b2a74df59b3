"""Phase 2 and every LiTS --transfer mode THROUGH THE TRAINER (Trainer.fit on tiny caches): frozen
parameters stay bit-identical to the --from checkpoint, trainable ones move; a wrong --from is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medchallenge.brats.models import MODELS as BRATS_MODELS
from medchallenge.brats.train import BratsTrainer, HavaeiOptions
from medchallenge.cli import app
from medchallenge.core.checkpoint import load_checkpoint, load_model
from medchallenge.core.engine import TrainConfig
from medchallenge.lits.models import MODELS as LITS_MODELS
from medchallenge.lits.models import transfer_from_brats
from medchallenge.lits.train import LitsOptions, LitsTrainer

FAST = {"patches_per_epoch": 16, "val_max_cases": 1, "dropout": 0.0}


def _config(out: Path) -> TrainConfig:
    return TrainConfig(out=out, epochs=1, batch_size=8, lr=0.01, weight_decay=1e-4, optimizer="sgd",
                       scheduler="none", grad_clip=1.0, device="cpu", workers=0, amp=False)


def _ok(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny BraTS and LiTS caches (2 labelled cases each) and a phase-1 BraTS checkpoint."""
    root = tmp_path_factory.mktemp("havaei")
    _ok("brats", "sample", "--out", str(root / "b"), "--n-cases", "3", "--size", "32", "--n-slices", "2")
    _ok("brats", "tile", "--data", str(root / "b"), "--cache", str(root / "bc"))
    _ok("lits", "sample", "--out", str(root / "l"), "--n-cases", "3", "--size", "32", "--n-slices", "2")
    _ok("lits", "tile", "--data", str(root / "l"), "--cache", str(root / "lc"))
    BratsTrainer(_config(root / "p1"), HavaeiOptions(root / "bc", **FAST)).fit()
    return {"brats": root / "bc", "lits": root / "lc", "p1": root / "p1" / "best.pt", "root": root}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def _split(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> tuple[set[str], set[str]]:
    """(names bit-identical, names that moved)."""
    same = {k for k in before if torch.equal(after[k], before[k])}
    return same, set(before) - same


def test_phase_two_through_the_trainer(caches: dict[str, Path], tmp_path: Path) -> None:
    options = HavaeiOptions(caches["brats"], phase=2, from_checkpoint=caches["p1"], **FAST)
    BratsTrainer(_config(tmp_path / "p2"), options).fit()
    same, moved = _split(_weights(tmp_path / "p2" / "last.pt"), _weights(caches["p1"]))
    assert moved == {"output_layer.weight", "output_layer.bias"}
    assert same and all(not k.startswith("output_layer") for k in same)


def test_phase_two_from_a_lits_checkpoint_is_one_line(caches: dict[str, Path], tmp_path: Path) -> None:
    BratsTrainer(_config(tmp_path / "src"), HavaeiOptions(caches["brats"], **FAST)).fit()
    lits_run = tmp_path / "lits"
    LitsTrainer(_config(lits_run), LitsOptions(caches["lits"], transfer="none", **FAST)).fit()
    result = CliRunner().invoke(app, ["brats", "train", "--cache", str(caches["brats"]), "--phase", "2", "--from",
                                      str(lits_run / "best.pt"), "--out", str(tmp_path / "x"), "--device", "cpu"])
    assert result.exit_code == 2 and "challenge 'lits', expected 'brats'" in result.output, result.output
    last = result.output.strip().splitlines()[-1]  # log lines before it; the error is one line, no traceback
    assert "expected 'brats'" in last and "Traceback" not in result.output and not (tmp_path / "x").exists()


def _adapted_brats(p1: Path) -> dict[str, torch.Tensor]:
    """What --transfer puts into a LiTS TwoPathCNN before training (output layer excluded)."""
    source, _ = load_model(p1, BRATS_MODELS, challenge="brats")
    target = LITS_MODELS.build({"name": "twopath", "kwargs": {"in_channels": 1, "num_classes": 3}})
    transfer_from_brats(target, source)
    return {k: v for k, v in target.state_dict().items() if not k.startswith("output_layer")}


@pytest.mark.parametrize(("mode", "trains"), [
    ("local", {"local_path"}), ("global", {"global_path"}), ("both", {"local_path", "global_path"}),
    ("e2e", {"local_path", "global_path"}),
])
def test_lits_transfer_through_the_trainer(caches: dict[str, Path], tmp_path: Path, mode: str, trains: set[str]) -> None:
    options = LitsOptions(caches["lits"], from_checkpoint=caches["p1"], transfer=mode, **FAST)
    LitsTrainer(_config(tmp_path / "run"), options).fit()
    before = _adapted_brats(caches["p1"])
    same, moved = _split(_weights(tmp_path / "run" / "last.pt"), before)
    assert {k.split(".")[0] for k in moved} == trains
    assert {k.split(".")[0] for k in same} == {"local_path", "global_path"} - trains


def test_lits_transfer_none_loads_nothing_and_trains_everything(caches: dict[str, Path], tmp_path: Path) -> None:
    trainer = LitsTrainer(_config(tmp_path / "run"), LitsOptions(caches["lits"], transfer="none", **FAST))
    model = trainer.build_model()
    trainer.prepare_model(model)
    assert all(p.requires_grad for p in model.parameters())
    before = _adapted_brats(caches["p1"])
    assert not any(torch.equal(model.state_dict()[k], v) for k, v in before.items() if v.ndim > 1)


def test_lits_phase_two_after_transfer_trains_only_the_output(caches: dict[str, Path], tmp_path: Path) -> None:
    first = tmp_path / "first"
    LitsTrainer(_config(first), LitsOptions(caches["lits"], from_checkpoint=caches["p1"], transfer="both", **FAST)).fit()
    options = LitsOptions(caches["lits"], phase=2, from_checkpoint=first / "best.pt", transfer="both", **FAST)
    LitsTrainer(_config(tmp_path / "second"), options).fit()
    same, moved = _split(_weights(tmp_path / "second" / "last.pt"), _weights(first / "best.pt"))
    assert moved == {"output_layer.weight", "output_layer.bias"}


def test_validation_scores_at_most_val_max_cases(caches: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = BratsTrainer(_config(tmp_path / "v"), HavaeiOptions(caches["brats"], **FAST))
    trainer.val_cases = trainer.val_cases * 5  # as if there were five validation cases
    seen: list[int] = []
    monkeypatch.setattr(trainer, "score_case", lambda pred, truth: seen.append(1) or {"wt_dice": 1.0})
    tracked: list[tuple[str, int | None]] = []

    def track(items, description, total=None):  # noqa: ANN001, ANN202
        tracked.append((description, total))
        return iter(items)

    monkeypatch.setattr("medchallenge.havaei.trainer.console.track", track)
    model = trainer.build_model().eval()
    trainer.validate(model)
    assert len(seen) == 1
    assert tracked == [("validation", 1)]  # batch logs report validation progress


def test_channels_last_and_accumulation_train(caches: dict[str, Path], tmp_path: Path) -> None:
    """Maxout's view over the channel axis works on channels_last tensors; config.json records both."""
    import json

    config = _config(tmp_path / "cl")
    config.channels_last, config.accumulate = True, 2
    result = BratsTrainer(config, HavaeiOptions(caches["brats"], **FAST)).fit()
    assert result["last"]["train_loss"] == result["last"]["train_loss"]  # finite, not NaN
    record = json.loads((tmp_path / "cl" / "config.json").read_text())
    assert record["channels_last"] is True and record["accumulate"] == 2
    assert record["optimizer"]["name"] == "SGD" and record["schedule"]["name"] == "exponential"
