"""``lits predict`` with several checkpoints (softmax averaged) and ``--tta`` (mirrored slices averaged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.checkpoint import load_checkpoint, save_checkpoint
from medchallenge.core.nifti import read_volume
from medchallenge.havaei.models import TwoPathCNN
from tests.lits.conftest import invoke


def _predict(data: Path, out: Path, *checkpoints: Path, tta: bool = False) -> dict[str, np.ndarray]:
    args = [a for c in checkpoints for a in ("--checkpoint", c)]
    invoke("lits", "predict", "--data", data, "--out", out, "--device", "cpu", *args,
           *(["--tta"] if tta else []))
    return {p.name: read_volume(p).array for p in sorted(out.glob("*.nii"))}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_ensembles(lits_sample: Path, fold_runs: list[Path], tmp_path: Path) -> None:
    one = _predict(lits_sample, tmp_path / "one", fold_runs[0])
    twice = _predict(lits_sample, tmp_path / "twice", fold_runs[0], fold_runs[0] / "best.pt")
    assert _same(one, twice)  # the same model twice is that model, bit for bit
    other = _predict(lits_sample, tmp_path / "other", fold_runs[1])
    both = _predict(lits_sample, tmp_path / "both", fold_runs[0], fold_runs[1])
    assert not _same(both, one) and not _same(both, other)


def _hu_window(tmp_path: Path, run: Path) -> Path:
    """A copy of the run's best.pt whose meta says another HU window."""
    payload = load_checkpoint(run / "best.pt")
    payload["meta"] = {**payload["meta"], "hu_window": [-100.0, 200.0]}
    save_checkpoint(tmp_path / "window.pt", payload)
    return tmp_path / "window.pt"


def test_an_ensemble_of_other_preprocessing_is_refused(lits_sample: Path, fold_runs: list[Path],
                                                       tmp_path: Path) -> None:
    odd = _hu_window(tmp_path, fold_runs[1])
    result = CliRunner().invoke(app, ["lits", "predict", "--data", str(lits_sample), "--out", str(tmp_path / "out"),
                                      "--checkpoint", str(fold_runs[0]), "--checkpoint", str(odd)])
    assert result.exit_code == 2 and "window.pt" in result.output and "hu_window" in result.output, result.output
    assert not (tmp_path / "out").exists()


def _mirrored(run: Path, hu: np.ndarray) -> np.ndarray:
    """nnU-Net-style mirroring written here: softmax of the slice, flipped in x, y and both, flipped back and
    averaged; argmax. ``hu``: S×H×W; the network sees HU clipped to [−200, 250] scaled (x − 25) / 112.5."""
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    model = TwoPathCNN(**checkpoint["model"]["kwargs"]).eval()
    model.load_state_dict(checkpoint["state_dict"])
    x = torch.from_numpy(((np.clip(hu, -200, 250) - 25) / 112.5).astype(np.float32))[:, None]
    total = 0
    with torch.no_grad():
        for dims in ((), (-1,), (-2,), (-2, -1)):
            logits = model(F.pad(x.flip(dims) if dims else x, (16, 16, 16, 16)))
            total = total + torch.softmax(logits.flip(dims) if dims else logits, dim=1)
    return total.argmax(1).numpy()


def test_tta_averages_the_mirrored_slices(lits_sample: Path, fold_runs: list[Path], tmp_path: Path) -> None:
    plain = _predict(lits_sample, tmp_path / "plain", fold_runs[0])
    tta = _predict(lits_sample, tmp_path / "tta", fold_runs[0], tta=True)
    assert not _same(plain, tta)
    hu = read_volume(lits_sample / "test-volume-4.nii").array.astype(np.float32)  # S×H×W (axial axis first)
    np.testing.assert_array_equal(tta["test-segmentation-4.nii"], _mirrored(fold_runs[0], hu))
