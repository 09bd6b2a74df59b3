"""The BraTS model registry: Havaei et al.'s TwoPathCNN and InputCascadeCNN (:mod:`medchallenge.havaei.models`).

A BraTS model takes the four modalities (FLAIR, T1, T1ce, T2) and has 5 classes: the 2021 label
values (class index = value, 3 unused).
"""

from __future__ import annotations

from medchallenge.core.registry import Registry
from medchallenge.havaei.models import InputCascadeCNN, TwoPathCNN

MODELS = Registry("brats")
MODELS.register("twopath")(TwoPathCNN)
MODELS.register("inputcascade")(InputCascadeCNN)
N_CLASSES = 5
