"""Test slides as tile stacks for inference: from a tile cache or tiled on the fly from raw slides.

Shared by the classifier's submission and the U-Net's mask prediction (both import it; it imports
neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medchallenge.panda.data import slide_path
from medchallenge.panda.tiles import TileCache, tile_slide


class SlideTileDataset(Dataset):
    """Tile stacks per test slide, one per tiling mode: (V×N×3×T×T uint8, index, present)."""

    def __init__(self, ids: list[str], tiling: dict[str, Any], modes: list[int],
                 data: Path | None = None, cache: TileCache | None = None, skip_missing: bool = False) -> None:
        self.ids = ids
        self.tiling = tiling
        self.modes = modes
        self.data = data
        self.cache = cache
        self.skip_missing = skip_missing

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        image_id = self.ids[i]
        n, t = int(self.tiling["n_tiles"]), int(self.tiling["tile_size"])
        if self.cache is not None:
            stacks = [self.cache.load(image_id).tiles]
        else:
            assert self.data is not None
            path = slide_path(self.data, "test", image_id)
            if not path.exists() and self.skip_missing:
                return torch.zeros(len(self.modes), n, 3, t, t, dtype=torch.uint8), i, False
            stacks = [
                tile_slide(path, level=int(self.tiling["level"]), n_tiles=n, tile_size=t, mode=mode).tiles
                for mode in self.modes
            ]
        views = torch.from_numpy(np.stack(stacks)).permute(0, 1, 4, 2, 3)
        return views, i, True
