"""Predictions that know their model: a rerun skips only what the same checkpoint and options made."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lits.conftest import TINY_TRAIN, invoke


def _state(out: Path) -> dict[str, tuple[int, str]]:
    """Each prediction's modification time and the checkpoint hash its manifest record names."""
    return {p.name: (p.stat().st_mtime_ns, json.loads((out / ".manifest" / f"{p.name}.json").read_text())["sha256"])
            for p in out.glob("*segmentation-*.nii")}


def test_a_retrained_model_redoes_every_prediction(lits_sample: Path, tmp_path: Path) -> None:
    cache, out = lits_sample / "patches", tmp_path / "pred"
    invoke("lits", "train", "--cache", cache, "--out", tmp_path / "a", *TINY_TRAIN)
    invoke("lits", "train", "--cache", cache, "--out", tmp_path / "b", *TINY_TRAIN, "--seed", "1")
    predict = ["lits", "predict", "--data", lits_sample, "--out", out, "--device", "cpu", "--all"]
    invoke(*predict, "--checkpoint", tmp_path / "a")
    first = _state(out)
    assert len(first) == 6  # 4 segmentation-N.nii + 2 test-segmentation-N.nii
    output = invoke(*predict, "--checkpoint", tmp_path / "a")
    assert _state(out) == first and "6 prediction(s)" in output and "already made by this checkpoint" in output
    output = invoke(*predict, "--checkpoint", tmp_path / "b" / "best.pt")
    second = _state(out)
    assert "made by another checkpoint" in output, output
    assert all(second[n][0] != first[n][0] and second[n][1] != first[n][1] for n in first)  # every one redone
    assert json.loads((out / "manifest.json").read_text())["sha256"] == second["segmentation-0.nii"][1]
    evaluate = json.loads(invoke("lits", "evaluate", "--predictions", out, "--truth", lits_sample / "answers",
                                 "--json").splitlines()[-1])
    assert evaluate["n"] == 2  # the manifest files are not taken for predictions
