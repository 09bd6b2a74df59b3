"""core.manifest: a predict rerun redoes outputs made by another checkpoint or other options."""

from __future__ import annotations

import json
from pathlib import Path

from medchallenge.core.manifest import PredictionManifest


def _predict(out: Path, checkpoint: Path, options: dict, names: list[str], overwrite: bool = False) -> list[str]:
    """A toy predict: writes <name>.txt for each pending name, as a real predict would."""
    manifest = PredictionManifest(out, checkpoint, options)
    exists = [(out / f"{n}.txt").exists() for n in names]
    done = []
    for i in manifest.pending(names, exists, overwrite):
        (out / f"{names[i]}.txt").parent.mkdir(parents=True, exist_ok=True)
        (out / f"{names[i]}.txt").write_text(checkpoint.read_text())
        manifest.record(names[i])
        done.append(names[i])
    return done


def test_rerun_skips_only_outputs_of_the_same_checkpoint_and_options(tmp_path: Path) -> None:
    ckpt, out, names = tmp_path / "best.pt", tmp_path / "pred", ["a", "b"]
    ckpt.write_text("model 1")
    assert _predict(out, ckpt, {"tta": False}, names) == ["a", "b"]
    assert _predict(out, ckpt, {"tta": False}, names) == []
    ckpt.write_text("model 2 (retrained)")
    assert _predict(out, ckpt, {"tta": False}, names) == ["a", "b"]  # stale outputs redone
    assert (out / "a.txt").read_text() == "model 2 (retrained)"
    assert _predict(out, ckpt, {"tta": True}, names) == ["a", "b"]  # other options: redone too
    assert _predict(out, ckpt, {"tta": True}, names, overwrite=True) == ["a", "b"]
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["options"] == {"tta": True} and len(summary["sha256"]) == 64


def test_an_output_without_a_record_is_redone(tmp_path: Path) -> None:
    ckpt, out = tmp_path / "best.pt", tmp_path / "pred"
    ckpt.write_text("m")
    out.mkdir()
    (out / "a.txt").write_text("made by an older version, no record")
    assert _predict(out, ckpt, {}, ["a"]) == ["a"]
