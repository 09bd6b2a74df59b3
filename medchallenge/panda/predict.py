"""PANDA submission: ISUP grade per test slide from a checkpoint, as ``image_id,isup_grade``.

From raw slides (``--data``) the tiles are cut on the fly, as a Kaggle kernel must (no cache on
disk); ``--tta`` averages the scores of mode-0 and mode-2 tilings. From a tile cache
(``--tiles``) the cached tiles are used. One row per ``test.csv`` id, in its order, written
atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import write_csv
from medchallenge.panda import encoding as enc
from medchallenge.panda.data import read_test_csv, slide_path
from medchallenge.panda.models import PandaClassifier, build_model
from medchallenge.panda.segment import MaskModels
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


def load_classifier(checkpoint: Path, device: torch.device) -> tuple[PandaClassifier, dict[str, Any]]:
    """Rebuild the classifier of a PANDA checkpoint on ``device`` (eval mode)."""
    state = load_checkpoint(checkpoint, challenge="panda", models=["classifier"])
    model = build_model(state["model"])
    load_state_dict_checked(model, state["state_dict"], checkpoint)
    return model.to(device).eval(), state


def predict_submission(
    checkpoint: Path,
    out: Path,
    data: Path = Path("."),
    tiles: Path | None = None,
    tta: bool = False,
    device: str = "auto",
    batch_size: int = 2,
    workers: int = 0,
    skip_missing: bool = False,
    mask_models: list[Path] | None = None,
) -> pd.DataFrame:
    """Predict every ``data/test.csv`` slide and write ``out`` (``image_id,isup_grade``).

    A mask-guided (4-channel) classifier needs ``mask_models``: U-Net checkpoints of its label
    scheme covering the test slides' providers; their masks form the 4th channel.

    Raises:
        DataError: missing test.csv or slide (unless ``skip_missing``: grade 0 and a warning),
            a corrupt slide, a checkpoint of another challenge or model, a cache missing test ids.
        OptionError: ``--tta`` with ``--tiles``, or a cache tiled unlike the training tiles;
            a 4-channel classifier without ``--mask-model`` or ``--mask-model`` with a 3-channel one.
    """
    dev = resolve_device(device)
    model, state = load_classifier(checkpoint, dev)
    encoding = state["model"]["kwargs"]["encoding"]
    tiling = dict(state["meta"]["tiling"])
    test = read_test_csv(Path(data) / "test.csv")
    ids = test["image_id"].tolist()
    masker = None
    mask_meta = state["meta"].get("mask")
    if mask_meta:
        if not mask_models:
            raise OptionError(f"{checkpoint} is a mask-guided classifier ({mask_meta['scheme']} masks): give the"
                              " U-Net(s) that make its mask channel with --mask-model UNET_RUN/best.pt")
        masker = MaskModels(mask_models, mask_meta["scheme"], dev, source=str(checkpoint))
        masker.check_covers(test["data_provider"].unique())
    elif mask_models:
        raise OptionError(f"--mask-model: {checkpoint} is an RGB classifier (3 channels), it takes no mask")
    providers = test["data_provider"].tolist()
    cache = None
    if tiles is not None:
        if tta:
            raise OptionError("--tta tiles the raw slides in modes 0 and 2: use --data, not --tiles")
        cache = TileCache(tiles)
        for key in ("level", "tile_size", "n_tiles"):
            if int(cache.meta[key]) != int(tiling[key]):
                raise OptionError(
                    f"{tiles}: tiled with {key}={cache.meta[key]} but the checkpoint was trained with {key}={tiling[key]}"
                )
        absent = sorted(set(ids) - set(cache.index["image_id"]))
        if absent:
            raise DataError(tiles, f"{len(absent)} test.csv id(s) not in the tile cache, e.g. {absent[0]}")
    else:
        for image_id in ids:
            path = slide_path(Path(data), "test", image_id)
            if not path.exists():
                if not skip_missing:
                    raise DataError(path, "slide listed in test.csv is missing (--skip-missing predicts grade 0 for it)")
                console.warn(f"{path}: missing, predicted as grade 0 (--skip-missing)")
    modes = [0, 2] if tta else [int(tiling.get("mode", 0))]
    dataset = SlideTileDataset(ids, tiling, modes, data=Path(data), cache=cache, skip_missing=skip_missing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = amp_dtype(dev)
    grades = np.zeros(len(ids), dtype=np.int64)
    with torch.inference_mode():
        for views, index, present in console.track(loader, "predict", total=len(loader)):
            b, v = views.shape[:2]
            flat = views.reshape(b * v, *views.shape[2:]).to(dev, non_blocking=True)
            if masker is not None:  # B·V×N×3×T×T → B·V×N×4×T×T, each slide through its provider's U-Net
                n = flat.shape[1]
                channels = [masker.channel(flat[j].contiguous(), providers[int(index[j // v])]) for j in range(b * v)]
                flat = torch.cat([flat, torch.stack(channels).reshape(b * v, n, 1, *flat.shape[-2:])], dim=2)
            with autocast(dev, dtype):
                logits = model(flat)
            probs = enc.scores(encoding, logits).reshape(b, v, *logits.shape[1:]).mean(dim=1)
            decoded = enc.decode(encoding, probs).cpu().numpy()
            decoded[~present.numpy()] = 0
            grades[index.numpy()] = decoded
    submission = pd.DataFrame({"image_id": ids, "isup_grade": grades})
    write_csv(out, submission)
    console.log(f"wrote {len(submission)} predictions to {out}")
    return submission
