"""Small core pieces: metrics, splits, parts, atomic writes, device, pretrained lookup, errors → exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from medchallenge.core.backbones import adapt_first_conv, create_classifier, first_conv
from medchallenge.core.device import resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import atomic_open, read_csv, write_json
from medchallenge.core.metrics import balanced_accuracy, confusion_matrix, dice, dice_counts
from medchallenge.core.options import challenge_app, report_errors
from medchallenge.core.parts import parse_case_range, select_part
from medchallenge.core.pretrained import resolve_weights
from medchallenge.core.splits import grouped_split, kfold_split, stratified_split


def test_dice_and_counts() -> None:
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert np.isnan(dice(np.zeros(3), np.zeros(3)))
    assert dice(np.zeros(3), np.zeros(3), empty=1.0) == 1.0
    assert dice_counts(a, b) == (1, 2, 2)


def test_balanced_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    assert balanced_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p))
    assert balanced_accuracy([0, 0, 1], [1, 1, 1]) == pytest.approx(0.5)
    assert confusion_matrix([0, 1, 1], [1, 1, 0], 2).tolist() == [[0, 1], [1, 1]]


def test_splits_are_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), 10)
    tr, va = stratified_split(labels, 0.25, seed=0)
    assert len(va) == 10 and not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [3, 2, 3, 2] or sorted(np.bincount(labels[va])) == [2, 2, 3, 3]
    assert (stratified_split(labels, 0.25, seed=0)[1] == va).all()
    folds = [kfold_split(labels, 5, k, seed=1)[1] for k in range(5)]
    assert sorted(np.concatenate(folds).tolist()) == list(range(40))
    groups = ["p1", "p1", "p2", "p3", "p3", "p4"]
    tr, va = grouped_split(groups, 0.5, seed=0)
    assert not {groups[i] for i in tr} & {groups[i] for i in va}
    with pytest.raises(OptionError):
        stratified_split([0, 1], 1.5, 0)


def test_parts() -> None:
    items = list(range(10))
    parts = [select_part(items, f"{k}/3") for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items
    assert select_part(items, None) == items
    assert parse_case_range("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(OptionError):
        select_part(items, "4/3")


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert target.read_text().startswith("{")


def test_read_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_csv(tmp_path / "none.csv")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        read_csv(tmp_path / "x.csv", required=["a", "c"])


def test_device_choice() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(OptionError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_missing_pretrained_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as info:
        resolve_weights("resnet18-f37072fd.pth", None, True, "resnet18")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "--no-pretrained" in message and "--weights" in message
    assert resolve_weights("x.pth", None, False, "x") is None


def test_pretrained_from_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = create_classifier("resnet18", 1000, pretrained=False)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    model = create_classifier("resnet18", 3, pretrained=True)
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 3


def test_fourth_channel_keeps_rgb_response() -> None:
    torch.manual_seed(0)
    model = create_classifier("resnet18", 2, pretrained=False).eval()
    conv = first_conv(model)
    x = torch.rand(1, 3, 32, 32)
    before = conv(x)
    adapt_first_conv(conv, 4)
    after = conv(torch.cat([x, torch.zeros(1, 1, 32, 32)], dim=1))
    torch.testing.assert_close(before, after)
    torch.testing.assert_close(conv.weight[:, 3], conv.weight[:, :3].mean(dim=1))


def test_report_errors_exit_2_one_line() -> None:
    app = challenge_app("test")

    @app.command()
    @report_errors
    def boom(path: str = "x.csv") -> None:
        raise DataError(path, "broken on purpose")

    @app.command()
    @report_errors
    def ok() -> None:
        typer.echo("fine")

    result = CliRunner().invoke(app, ["boom", "--path", "data/x.csv"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: data/x.csv: broken on purpose"
    assert CliRunner().invoke(app, ["ok"]).exit_code == 0


def test_log_lines_follow_the_current_stderr(monkeypatch) -> None:
    import io
    import sys

    from medchallenge.core import console

    saved = list(console.logger.handlers)
    for handler in saved:
        console.logger.removeHandler(handler)
    monkeypatch.setattr(console.logger, "_medchallenge_configured", False, raising=False)
    try:
        first, second = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        console.log("first")  # the logger is configured while stderr is `first`
        first_text = first.getvalue()
        first.close()  # as CliRunner closes its stream after an invocation
        monkeypatch.setattr(sys, "stderr", second)
        console.log("second line")
        assert "first" in first_text and "second line" in second.getvalue()
    finally:
        for handler in list(console.logger.handlers):
            console.logger.removeHandler(handler)
        for handler in saved:
            console.logger.addHandler(handler)


def test_region_dice_of_a_confusion_matrix_equals_dice_of_the_masks() -> None:
    import numpy as np

    from medchallenge.core.metrics import confusion_matrix, dice, dice_from_counts, region_dice

    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    matrix = confusion_matrix(truth, pred, 4)
    for region in ([1], [2, 3], [1, 2, 3]):
        expected = dice(np.isin(pred, region), np.isin(truth, region))
        assert region_dice(matrix, region) == expected
    empty = np.zeros((3, 3), int)
    empty[0, 0] = 9
    assert np.isnan(region_dice(empty, [2])) and region_dice(empty, [2], empty=1.0) == 1.0
    assert dice_from_counts(0, 0, empty=0.0) == 0.0 and dice_from_counts(3, 8) == 0.75
