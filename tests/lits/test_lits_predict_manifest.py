"""Predictions that know their model: a rerun skips only what the same checkpoint and options made."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lits.conftest import invoke


def _state(out: Path) -> dict[str, tuple[int, str]]:
    """Each prediction's modification time and the checkpoint hash its manifest record names."""
    return {p.name: (p.stat().st_mtime_ns, json.loads((out / ".manifest" / f"{p.name}.json").read_text())["sha256"])
            for p in out.glob("*segmentation-*.nii")}


def test_a_retrained_model_redoes_every_prediction(lits_sample: Path, fold_runs: list[Path], tmp_path: Path) -> None:
    a, b, out = fold_runs[0], fold_runs[1], tmp_path / "pred"  # two runs: two different checkpoints
    predict = ["lits", "predict", "--data", lits_sample, "--out", out, "--device", "cpu"]
    invoke(*predict, "--checkpoint", a)
    first = _state(out)
    assert len(first) == 2  # test-segmentation-4.nii, test-segmentation-5.nii
    output = invoke(*predict, "--checkpoint", a)
    assert _state(out) == first and "2 prediction(s)" in output and "already made by this checkpoint" in output
    output = invoke(*predict, "--checkpoint", b / "best.pt")
    second = _state(out)
    assert "made by another checkpoint" in output, output
    assert all(second[n][0] != first[n][0] and second[n][1] != first[n][1] for n in first)  # every one redone
    assert json.loads((out / "manifest.json").read_text())["sha256"] == second["test-segmentation-4.nii"][1]
    evaluate = json.loads(invoke("lits", "evaluate", "--predictions", out, "--truth", lits_sample / "answers",
                                 "--json").splitlines()[-1])
    assert evaluate["n"] == 2  # the manifest files are not taken for predictions


def test_tta_is_another_option_set(lits_sample: Path, fold_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pred"
    predict = ["lits", "predict", "--data", lits_sample, "--out", out, "--device", "cpu", "--checkpoint", fold_runs[0]]
    invoke(*predict)
    first = _state(out)
    assert "made by another checkpoint or other options" in invoke(*predict, "--tta")
    assert all(_state(out)[n][0] != first[n][0] for n in first)
