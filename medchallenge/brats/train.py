"""BraTS training: the Havaei patch trainer (:mod:`medchallenge.havaei.trainer`) on a "brats-patches" cache.

Phase 1 (``--phase 1``): equiprobable patch centres, every layer trains (from scratch, or from
``--from``). Phase 2 (``--phase 2 --from PHASE1/best.pt``): natural sampling, the phase-1 weights
loaded through :func:`medchallenge.core.checkpoint.load_model` and everything but the output
layer frozen — the paper's dual-stage remedy for the class imbalance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from medchallenge.brats.metrics import region_counts, region_dice
from medchallenge.brats.models import MODELS, N_CLASSES
from medchallenge.brats.preprocess import CACHE_KIND
from medchallenge.core.checkpoint import load_model
from medchallenge.havaei.trainer import HavaeiOptions, HavaeiTrainer, freeze_all_but_output


class BratsTrainer(HavaeiTrainer):
    """TwoPathCNN / InputCascadeCNN on BraTS patches; best checkpoint by the mean of WT, TC and ET Dice."""

    challenge = "brats"
    cache_kind = CACHE_KIND
    registry = MODELS
    n_classes = N_CLASSES
    allowed_classes = [0, 1, 2, 4]
    strata_class = 4  # split stratified by "has enhancing tumour" (class 4 = ET in either convention)

    def prepare_model(self, model: nn.Module) -> None:
        """``--from``: the weights of a BraTS checkpoint of the same model and channels; phase 2 freezes
        everything but the output layer."""
        o = self.options
        if o.from_checkpoint is not None:
            source, _ = load_model(o.from_checkpoint, MODELS, challenge=self.challenge, models=[o.model],
                                   expect={"in_channels": self.in_channels, "num_classes": self.n_classes})
            model.load_state_dict(source.state_dict())
        if o.phase == 2:
            freeze_all_but_output(model)

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        # the label convention of the training data, so predict writes labels in the input's convention
        return {**super().checkpoint_meta(row), "convention": self.meta["convention"]}

    def score_case(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        return region_dice(pred, truth)

    def oof_row(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
        """WT/TC/ET Dice and their voxel counts (``cv`` pools them; cache classes are the 2021 values)."""
        return {**region_dice(pred, truth), **region_counts(pred, truth)}

    def restrict(self, pred: np.ndarray, images: np.ndarray) -> None:
        """Background outside the brain (all channels 0 in the cache), as ``brats predict`` writes it."""
        pred[~(np.asarray(images) != 0).any(axis=0)] = 0


__all__ = ["BratsTrainer", "HavaeiOptions"]
