"""ISUP label encodings: how grades 0–5 become training targets and outputs become grades.

- ``ordinal`` (default, the public baseline's): 5 outputs, target ``[1]*g + [0]*(5-g)``, BCE;
  grade = rounded sum of sigmoids.
- ``class``: 6-way softmax, cross-entropy; grade = argmax.
- ``onehot`` (the report's variant 1): 5 outputs, grade 0 = all zeros, grade g ≥ 1 = a one at
  position ``5 - g`` (1 → [0,0,0,0,1], 2 → [0,0,0,1,0], ...), BCE; grade = 0 when no sigmoid
  exceeds 0.5, else ``5 - argmax``.
- ``tile-vote`` (the report's variant 2): every tile is classified alone (6-way CE, each tile
  carries its slide's grade); slide grade = majority of its tiles' grades (ties → lower grade).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medchallenge.core.errors import OptionError

N_GRADES = 6
ENCODINGS = ("ordinal", "class", "onehot", "tile-vote")


def check_encoding(name: str) -> None:
    if name not in ENCODINGS:
        raise OptionError(f"--label-encoding {name}: expected one of {', '.join(ENCODINGS)}")


def n_outputs(encoding: str) -> int:
    """Model outputs per sample (per tile for ``tile-vote``)."""
    check_encoding(encoding)
    return 5 if encoding in ("ordinal", "onehot") else N_GRADES


def ordinal_encode(grades: torch.Tensor) -> torch.Tensor:
    """Grades (B,) int → B×5 float targets, ``[1]*g + [0]*(5-g)``."""
    return (torch.arange(5, device=grades.device)[None, :] < grades[:, None]).float()


def onehot_encode(grades: torch.Tensor) -> torch.Tensor:
    """Grades (B,) int → B×5 float, the report's 5-vector (grade 0 all zeros)."""
    out = torch.zeros(grades.shape[0], 5, device=grades.device)
    nonzero = grades > 0
    out[nonzero, 5 - grades[nonzero]] = 1.0
    return out


def loss(encoding: str, logits: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """Training loss. ``logits``: B×K, or B×N×6 for ``tile-vote``; ``grades``: (B,) int64."""
    logits = logits.float()
    if encoding == "ordinal":
        return F.binary_cross_entropy_with_logits(logits, ordinal_encode(grades))
    if encoding == "onehot":
        return F.binary_cross_entropy_with_logits(logits, onehot_encode(grades))
    if encoding == "class":
        return F.cross_entropy(logits, grades)
    if encoding == "tile-vote":
        n_tiles = logits.shape[1]
        return F.cross_entropy(logits.reshape(-1, N_GRADES), grades.repeat_interleave(n_tiles))
    raise OptionError(f"unknown label encoding {encoding}")


def scores(encoding: str, logits: torch.Tensor) -> torch.Tensor:
    """Outputs → per-sample scores that can be averaged across TTA views (probabilities)."""
    logits = logits.float()
    if encoding in ("ordinal", "onehot"):
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def decode(encoding: str, probs: torch.Tensor) -> torch.Tensor:
    """Scores from :func:`scores` (averaged or not) → grades (B,) int64 in 0..5."""
    if encoding == "ordinal":
        return probs.sum(dim=1).round().clamp(0, 5).long()
    if encoding == "onehot":
        grade = 5 - probs.argmax(dim=1)
        return torch.where(probs.max(dim=1).values > 0.5, grade, torch.zeros_like(grade)).long()
    if encoding == "class":
        return probs.argmax(dim=1).long()
    if encoding == "tile-vote":
        votes = F.one_hot(probs.argmax(dim=-1), N_GRADES).sum(dim=1)  # B×6 counts
        return votes.argmax(dim=1).long()  # argmax takes the first (lowest) grade on ties
    raise OptionError(f"unknown label encoding {encoding}")


def slide_score(encoding: str, probs: torch.Tensor) -> torch.Tensor:
    """Scores from :func:`scores` → the continuous ISUP score (B,) float that cut-offs grade and OOF rows keep.

    ``ordinal``: the sum of the 5 sigmoids (0–5; rounding it is the baseline's grade); ``class``:
    the expected grade Σ k·p_k; ``onehot`` and ``tile-vote``: the decoded grade itself.
    """
    if encoding == "ordinal":
        return probs.sum(dim=1).float()
    if encoding == "class":
        return (probs * torch.arange(N_GRADES, device=probs.device, dtype=probs.dtype)).sum(dim=1).float()
    return decode(encoding, probs).float()


def grade_with_cutoffs(encoding: str, probs: torch.Tensor, cutoffs: list[float] | None) -> torch.Tensor:
    """Grades (B,) int64: the ordinal score through ``cutoffs`` (5 ascending), else :func:`decode`."""
    if encoding != "ordinal" or cutoffs is None:
        return decode(encoding, probs)
    edges = torch.as_tensor(cutoffs, dtype=torch.float64, device=probs.device)
    return (slide_score(encoding, probs).double()[:, None] >= edges[None, :]).sum(dim=1).long()
