"""Provenance: config.json records what ran; `medchallenge env` prints it."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from typer.testing import CliRunner

from medchallenge import __version__
from medchallenge.cli import app


def test_config_records_the_run_environment(tmp_path: Path, monkeypatch) -> None:
    from test_engine import ToyTrainer, _config

    monkeypatch.setattr("sys.argv", ["medchallenge", "toy", "train", "--epochs", "1"])
    ToyTrainer(_config(tmp_path / "run", epochs=1), {"data": Path("relative/data")}).fit()
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    prov = record["provenance"]
    assert prov["command"] == ["medchallenge", "toy", "train", "--epochs", "1"]
    assert prov["device"] == "cpu" and prov["amp_dtype"] is None  # no AMP on a CPU run, whatever --amp says
    env = prov["environment"]
    assert env["medchallenge"] == __version__ and env["python"] == platform.python_version()
    assert env["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert env["cuda_available"] is False and env["gpus"] == []
    assert record["options"]["data"] == str(Path.cwd() / "relative" / "data")  # absolute input paths


def test_env_command_lists_versions_and_weight_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"x")
    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["medchallenge"] == __version__ and "torch" in record["libraries"]
    present = {row["model"]: row["present"] for row in record["pretrained"]}
    assert present["resnet18"] is True and present["efficientnet-b0"] is False
    assert all(row["file"].startswith(str(checkpoints)) for row in record["pretrained"])
    table = CliRunner().invoke(app, ["env"], env={"COLUMNS": "200", "TORCH_HOME": str(tmp_path)})
    assert table.exit_code == 0 and "pretrained weights" in table.output


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_config_json_fingerprints_every_input_path(tmp_path) -> None:
    import json

    from test_engine import ToyTrainer, _config

    from medchallenge.core.provenance import fingerprint

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text('{"kind": "toy"}')
    (cache / "a.npy").write_bytes(b"1234")
    ToyTrainer(_config(tmp_path / "run", epochs=1), {"cache": cache, "depth": 3}).fit()
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data == {"cache": {"path": str(cache.absolute()), "fingerprint": fingerprint(cache)}}
    before = fingerprint(cache)
    (cache / "b.npy").write_bytes(b"5")  # a new tile changes it
    assert fingerprint(cache) != before and len(before) == 64
