"""core.registry and core.checkpoint.load_model: one spec, one way from a checkpoint to a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medchallenge.core.checkpoint import load_model, save_checkpoint
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.registry import Registry

MODELS = Registry("toy")


@MODELS.register("mlp")
def _mlp(in_channels: int = 4, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(in_channels, width), nn.ReLU(), nn.Linear(width, 2))


def _save(path: Path, spec: dict, model: nn.Module, challenge: str = "toy") -> None:
    save_checkpoint(path, {"challenge": challenge, "model": spec, "state_dict": model.state_dict(), "meta": {}})


def test_round_trip_through_the_spec(tmp_path: Path) -> None:
    spec = {"name": "mlp", "kwargs": {"in_channels": 3, "width": 5}}
    model = MODELS.build(spec)
    _save(tmp_path / "a.pt", spec, model)
    loaded, payload = load_model(tmp_path / "a.pt", MODELS, challenge="toy", expect={"in_channels": 3})
    assert not loaded.training and payload["model"] == spec
    x = torch.randn(2, 3)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_mismatches_are_one_line_data_errors(tmp_path: Path) -> None:
    spec = {"name": "mlp", "kwargs": {"in_channels": 3}}
    _save(tmp_path / "a.pt", spec, MODELS.build(spec))
    with pytest.raises(DataError, match="in_channels=3, this data needs 4"):
        load_model(tmp_path / "a.pt", MODELS, challenge="toy", expect={"in_channels": 4})
    with pytest.raises(DataError, match="challenge 'toy', expected 'kits'"):
        load_model(tmp_path / "a.pt", MODELS, challenge="kits")
    # weights of another width under the same spec name: the architecture does not fit
    _save(tmp_path / "b.pt", {"name": "mlp", "kwargs": {"in_channels": 3, "width": 5}}, MODELS.build(spec))
    with pytest.raises(DataError, match="weights do not fit"):
        load_model(tmp_path / "b.pt", MODELS, challenge="toy")
    _save(tmp_path / "c.pt", {"name": "mlp", "kwargs": {"depth": 3}}, MODELS.build(spec))
    with pytest.raises(DataError, match="cannot rebuild model 'mlp'"):
        load_model(tmp_path / "c.pt", MODELS, challenge="toy")


def test_registry_refuses_unknown_and_duplicate_names() -> None:
    with pytest.raises(OptionError, match="unknown model 'vit'; known: mlp"):
        MODELS.build({"name": "vit"})
    with pytest.raises(ValueError, match="registered twice"):
        MODELS.register("mlp")(_mlp)


def test_load_models_runs_members_one_at_a_time_when_they_do_not_fit(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from medchallenge.core import offload
    from medchallenge.core.checkpoint import load_models

    spec = {"name": "mlp", "kwargs": {"in_channels": 3}}
    models = [MODELS.build(spec), MODELS.build(spec)]
    for i, model in enumerate(models):
        _save(tmp_path / f"{i}.pt", spec, model)
    paths = [tmp_path / "0.pt", tmp_path / "1.pt"]
    together = load_models(paths, MODELS, challenge="toy")
    assert not any(isinstance(m, offload.OneAtATime) for m, _ in together)
    monkeypatch.setattr(offload, "free_bytes", lambda device: 100)  # a nearly full device
    apart = load_models(paths, MODELS, challenge="toy")
    assert all(isinstance(m, offload.OneAtATime) for m, _ in apart)
    x = torch.randn(2, 3)
    for (member, _), model in zip(apart, models):
        torch.testing.assert_close(member(x), model.eval()(x))
