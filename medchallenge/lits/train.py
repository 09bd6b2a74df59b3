"""LiTS training: the Havaei patch trainer on a "lits-patches" cache, by transfer from a BraTS checkpoint.

``--transfer`` (with ``--from BRATS_RUN/best.pt``, see :mod:`medchallenge.lits.models` for the
weight mapping): ``local`` (the local path and the output layer train), ``global`` (global path
+ output), ``both`` (both paths + output; for an InputCascadeCNN, those of the second net),
``e2e`` (everything fine-tuned), ``none`` (from scratch, no BraTS weights). A LiTS checkpoint as
``--from`` continues that model with the same freezing. ``--phase 2`` then trains only the
output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_model
from medchallenge.core.errors import DataError, OptionError
from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN
from medchallenge.havaei.trainer import HavaeiOptions, HavaeiTrainer, freeze_all_but_output
from medchallenge.lits.metrics import lits_case_score, oof_values
from medchallenge.lits.models import (
    BRATS_CHANNELS,
    BRATS_CLASSES,
    MODELS,
    N_CLASSES,
    SOURCE_MODELS,
    transfer_from_brats,
)
from medchallenge.lits.preprocess import CACHE_KIND, HU_WINDOW

TRANSFERS = ("local", "global", "both", "e2e", "none")



def set_trainable(model: nn.Module, transfer: str) -> None:
    """Freeze per ``--transfer`` (see the module docstring)."""
    if transfer in ("e2e", "none"):
        for p in model.parameters():
            p.requires_grad = True
        return
    for p in model.parameters():
        p.requires_grad = False
    net = model.second if isinstance(model, InputCascadeCNN) else model
    assert isinstance(net, TwoPathCNN)
    parts = {"local": [net.local_path], "global": [net.global_path], "both": [net.local_path, net.global_path]}
    for module in [*parts[transfer], net.output_layer]:
        for p in module.parameters():
            p.requires_grad = True


@dataclass
class LitsOptions(HavaeiOptions):
    """HavaeiOptions plus the transfer setup."""

    transfer: str = "both"


class LitsTrainer(HavaeiTrainer):
    """Liver and tumour by transfer; best checkpoint by the mean of liver and tumour Dice."""

    challenge = "lits"
    cache_kind = CACHE_KIND
    registry = MODELS
    n_classes = N_CLASSES
    allowed_classes = [0, 1, 2]
    strata_class = 2  # folds stratified by whether a volume holds tumour

    def __init__(self, config: Any, options: LitsOptions) -> None:
        if options.transfer not in TRANSFERS:
            raise OptionError(f"--transfer {options.transfer}: expected one of {', '.join(TRANSFERS)}")
        if options.transfer != "none" and options.from_checkpoint is None:
            raise OptionError(f"--transfer {options.transfer} needs --from BRATS_RUN/best.pt (or --transfer none)")
        super().__init__(config, options)

    def prepare_model(self, model: nn.Module) -> None:
        """Load ``--from`` (a BraTS model, adapted; or a LiTS model, as is) and freeze per ``--transfer``
        and ``--phase``."""
        o = self.options
        if o.from_checkpoint is not None and o.transfer != "none":
            self._load_from(model)
        set_trainable(model, "e2e" if o.transfer == "none" else o.transfer)
        if o.phase == 2:
            freeze_all_but_output(model)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        console.log(f"--transfer {o.transfer}: {n:,} trainable parameters")

    def _load_from(self, model: nn.Module) -> None:
        path, name = self.options.from_checkpoint, self.options.model
        assert path is not None
        challenge = load_checkpoint(path).get("challenge")  # which registry rebuilds it
        if challenge == "brats":
            source, _ = load_model(path, SOURCE_MODELS, challenge="brats", models=[name],
                                   expect={"in_channels": BRATS_CHANNELS, "num_classes": BRATS_CLASSES})
            transfer_from_brats(model, source)
        elif challenge == "lits":
            source, _ = load_model(path, MODELS, challenge="lits", models=[name],
                                   expect={"in_channels": self.in_channels, "num_classes": N_CLASSES})
            model.load_state_dict(source.state_dict())
        else:
            raise DataError(path, f"a {challenge} checkpoint: expected brats or lits")

    def checkpoint_meta(self, row: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**super().checkpoint_meta(row), "transfer": self.options.transfer, "hu_window": list(HU_WINDOW)}

    def oof_row(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
        """A validation volume's official per-case Dice and the counts the global Dice pools
        (:data:`medchallenge.lits.metrics.OOF_COLUMNS`, pooled by ``lits cv``)."""
        return oof_values(lits_case_score(pred, truth))

    def score_case(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """The official per-case rule (:mod:`medchallenge.lits.metrics`), so the best checkpoint is
        the best by the challenge's score."""
        score = lits_case_score(pred, truth)
        return {"liver_dice": score.liver_dice, "tumor_dice": score.tumor_dice}
