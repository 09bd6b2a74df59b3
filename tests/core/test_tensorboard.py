"""--tensorboard: per-step loss and lr, per-epoch metrics, preview images and hparams in RUN/tensorboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medchallenge.core.preview import overlay, side_by_side, truth_and_prediction

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run: Path):
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_steps_epochs_images_and_hparams(tmp_path: Path) -> None:
    from test_engine import ToyTrainer, _config

    class Previewing(ToyTrainer):
        def preview_images(self, model):
            x = torch.linspace(0, 1, 64).reshape(8, 8)
            return {"case0": truth_and_prediction(x.numpy(), (x > 0.5).numpy(), (x > 0.4).numpy()),
                    "probabilities": x[None]}

    Previewing(_config(tmp_path / "run", epochs=2, tensorboard=True)).fit()
    acc = _events(tmp_path / "run")
    scalars = acc.Tags()["scalars"]
    assert {"train/loss_step", "train/lr", "train_loss", "accuracy"} <= set(scalars)
    assert len(acc.Scalars("train/loss_step")) == 2 * 8  # 64 samples / batch 8, two epochs
    assert [e.step for e in acc.Scalars("accuracy")] == [1, 2]
    assert {"preview/case0", "preview/probabilities"} <= set(acc.Tags()["images"])
    image = acc.Images("preview/case0")[-1]
    assert (image.width, image.height) == (8 + 4 + 8, 8)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # the options, in the HPARAMS tab
    assert acc.Scalars("hparam/accuracy")[-1].value == pytest.approx(max(e.value for e in acc.Scalars("accuracy")))


def test_overlay_colours_only_labelled_pixels() -> None:
    image = np.zeros((4, 4), dtype=np.float32)
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[0, 0], labels[1, 1] = 1, 2
    rgb = overlay(image, labels, alpha=1.0)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (230, 25, 75) and tuple(rgb[1, 1]) == (60, 180, 75)
    assert tuple(rgb[2, 2]) == (0, 0, 0)
    assert side_by_side(rgb, rgb[:2]).shape == (4, 4 + 4 + 4, 3)
