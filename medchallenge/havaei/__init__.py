"""Havaei et al.'s patch-based brain-tumour networks, shared by ``brats`` and ``lits`` (a library, not a challenge).

- :mod:`.models`     TwoPathCNN / InputCascadeCNN with maxout, and a registry factory
- :mod:`.patches`    the patch cache (normalised volumes + per-class centre index) behind ``tile``
- :mod:`.inference`  whole-slice segmentation through :func:`medchallenge.core.inference.segment_batches`
- :mod:`.trainer`    the patch trainer (SGD with a momentum ramp, exponential LR decay, L1) and its options
- :mod:`.options`    the Typer option types both challenges' ``train`` share

It imports only ``core``; ``brats`` and ``lits`` import it as siblings and never each other.
"""
