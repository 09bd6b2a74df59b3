"""core.parts: the one rule for single-file outputs of array jobs (part files, merge when complete)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchallenge.core.errors import DataError
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.parts import complete_parts, find_parts, merge_when_complete, part_path


def _join(parts: list[Path], target: Path) -> None:
    target.write_text("".join(p.read_text() for p in parts))


def test_part_path_names() -> None:
    assert part_path(Path("out/submission.csv"), None) == Path("out/submission.csv")
    assert part_path(Path("out/submission.csv"), "2/4") == Path("out/submission.part-2-of-4.csv")
    assert part_path(Path("o/detections.json"), "1/1") == Path("o/detections.part-1-of-1.json")


def test_find_and_complete_parts(tmp_path: Path) -> None:
    target = tmp_path / "submission.csv"
    assert find_parts(target) == (0, {})
    with pytest.raises(DataError, match="no submission.csv"):
        complete_parts(target)
    for k in (1, 3):
        part_path(target, f"{k}/3").write_text(f"{k}\n")
    (tmp_path / "other.part-2-of-3.csv").write_text("x\n")  # another output's part does not count
    n, parts = find_parts(target)
    assert n == 3 and sorted(parts) == [1, 3]
    with pytest.raises(DataError, match="part\\(s\\) 2/3 not written yet"):
        complete_parts(target)
    part_path(target, "2/3").write_text("2\n")
    assert [p.name for p in complete_parts(target)] == [f"submission.part-{k}-of-3.csv" for k in (1, 2, 3)]
    part_path(target, "1/2").write_text("stale\n")
    with pytest.raises(DataError, match="different --part N"):
        find_parts(target)


def test_merge_waits_for_every_part_made_by_this_model(tmp_path: Path) -> None:
    target = tmp_path / "submission.csv"
    ckpt_a, ckpt_b = tmp_path / "a.pt", tmp_path / "b.pt"
    ckpt_a.write_bytes(b"a")
    ckpt_b.write_bytes(b"b")
    a, b = PredictionManifest(tmp_path, ckpt_a, {}), PredictionManifest(tmp_path, ckpt_b, {})
    part_path(target, "1/2").write_text("one\n")
    a.record("submission.part-1-of-2.csv")
    assert merge_when_complete(target, "1/2", _join, a) is None and not target.exists()  # part 2 missing
    part_path(target, "2/2").write_text("two\n")
    b.record("submission.part-2-of-2.csv")
    assert merge_when_complete(target, "2/2", _join, a) is None  # part 2 was made by another checkpoint
    a.record("submission.part-2-of-2.csv")
    assert merge_when_complete(target, "2/2", _join, a) == target
    assert target.read_text() == "one\ntwo\n" and a.made_here("submission.csv")
    assert merge_when_complete(tmp_path / "x.csv", None, _join, a) is None  # no --part: nothing to merge
