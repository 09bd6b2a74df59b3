"""PANDA submission: ISUP grade per test slide from a checkpoint, as ``image_id,isup_grade``.

From raw slides (``--data``) the tiles are cut on the fly, as a Kaggle kernel must (no cache on
disk); ``--tta`` averages the scores of mode-0 and mode-2 tilings. From a tile cache
(``--cache``) the cached tiles are used. ``predict --out DIR`` writes ``DIR/submission.csv``, one
row per ``test.csv`` id in its order, atomically. With ``--part K/N`` each part writes
``DIR/submission.part-K-of-N.csv`` (every N-th id); :func:`merge_parts` (``panda predict
--merge-parts --out DIR``, or ``evaluate --predictions DIR``) joins the N parts into one file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import load_model
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import write_csv
from medchallenge.core.manifest import PredictionManifest, checkpoint_hash
from medchallenge.core.parts import parse_part, select_part
from medchallenge.core.runs import resolve_checkpoint
from medchallenge.panda import encoding as enc
from medchallenge.panda.data import read_test_csv, slide_path
from medchallenge.panda.models import MODELS
from medchallenge.panda.segpredict import MaskModels
from medchallenge.panda.slides import SlideTileDataset
from medchallenge.panda.tiles import TileCache

SUBMISSION = "submission.csv"
PART_FILE = re.compile(r"submission\.part-(\d+)-of-(\d+)\.csv")


def submission_file(out: Path, part: str | None) -> Path:
    """``out/submission.csv``, or ``out/submission.part-K-of-N.csv`` for ``--part K/N``."""
    if part is None:
        return Path(out) / SUBMISSION
    k, n = parse_part(part)
    return Path(out) / f"submission.part-{k}-of-{n}.csv"


def _mask_models(checkpoint: Path, state: dict[str, Any], mask_models: list[Path] | None, test: pd.DataFrame,
                 dev: torch.device) -> MaskModels | None:
    """The U-Nets making a mask-guided classifier's 4th channel (None for an RGB classifier)."""
    mask_meta = state["meta"].get("mask")
    if not mask_meta:
        if mask_models:
            raise OptionError(f"--mask-model: {checkpoint} is an RGB classifier (3 channels), it takes no mask")
        return None
    if not mask_models:
        raise OptionError(f"{checkpoint} is a mask-guided classifier ({mask_meta['scheme']} masks): give the"
                          " U-Net(s) that make its mask channel with --mask-model UNET_RUN/best.pt")
    masker = MaskModels(mask_models, mask_meta["scheme"], dev, source=str(checkpoint))
    masker.check_covers(test["data_provider"].unique())
    return masker


def _check_sources(ids: list[str], tiling: dict[str, Any], data: Path, tiles: Path | None, tta: bool,
                   skip_missing: bool) -> TileCache | None:
    """The tile cache when given (tiled like the training tiles, holding every id); else checks the slides."""
    if tiles is None:
        for image_id in ids:
            path = slide_path(data, "test", image_id)
            if not path.exists():
                if not skip_missing:
                    raise DataError(path, "slide listed in test.csv is missing (--skip-missing predicts grade 0 for it)")
                console.warn(f"{path}: missing, predicted as grade 0 (--skip-missing)")
        return None
    if tta:
        raise OptionError("--tta tiles the raw slides in modes 0 and 2: use --data, not --cache")
    cache = TileCache(tiles)
    for key in ("level", "tile_size", "n_tiles"):
        if int(cache.meta[key]) != int(tiling[key]):
            raise OptionError(f"{tiles}: tiled with {key}={cache.meta[key]} but the checkpoint was trained with"
                              f" {key}={tiling[key]}")
    absent = sorted(set(ids) - set(cache.index["image_id"]))
    if absent:
        raise DataError(tiles, f"{len(absent)} test.csv id(s) not in the tile cache, e.g. {absent[0]}")
    return cache


@torch.inference_mode()
def _grade(model: torch.nn.Module, encoding: str, dataset: SlideTileDataset, providers: list[str],
           masker: MaskModels | None, dev: torch.device, batch_size: int, workers: int) -> np.ndarray:
    """ISUP grade of every slide of ``dataset`` (views averaged; a missing slide gets grade 0)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = amp_dtype(dev)
    grades = np.zeros(len(dataset), dtype=np.int64)
    for views, index, present in console.track(loader, "predict", total=len(loader)):
        b, v = views.shape[:2]
        flat = views.reshape(b * v, *views.shape[2:])
        if masker is not None:  # B·V×N×3×T×T → B·V×N×4×T×T, each slide through its provider's U-Net
            channels = [masker.channel(flat[j].numpy(), providers[int(index[j // v])]) for j in range(b * v)]
            flat = torch.cat([flat, torch.from_numpy(np.stack(channels))], dim=2)
        flat = flat.to(dev, non_blocking=True)
        with autocast(dev, dtype):
            logits = model(flat)
        probs = enc.scores(encoding, logits).reshape(b, v, *logits.shape[1:]).mean(dim=1)
        decoded = enc.decode(encoding, probs).cpu().numpy()
        decoded[~present.numpy()] = 0
        grades[index.numpy()] = decoded
    return grades


def predict_submission(checkpoint: Path, out: Path, data: Path = Path("."), tiles: Path | None = None,
                       tta: bool = False, device: str = "auto", batch_size: int = 2, workers: int = 0,
                       skip_missing: bool = False, mask_models: list[Path] | None = None,
                       part: str | None = None, overwrite: bool = False) -> pd.DataFrame | None:
    """Predict every ``data/test.csv`` slide (this ``part``'s) into the folder ``out``; returns the rows.

    A finished file is kept (None returned) only when this checkpoint made it with the same options
    (``OUT/.manifest``); after retraining, or with other options, it is redone and the log says so. A mask-guided (4-channel)
    classifier needs ``mask_models``: U-Net checkpoints of its label scheme covering the test
    slides' providers; their masks form the 4th channel.

    Raises:
        DataError: missing test.csv or slide (unless ``skip_missing``: grade 0 and a warning),
            a corrupt slide, a checkpoint of another challenge or model, a cache missing test ids.
        OptionError: ``--tta`` with ``--cache``, or a cache tiled unlike the training tiles;
            a 4-channel classifier without ``--mask-model`` or ``--mask-model`` with a 3-channel one.
    """
    target = submission_file(out, part)
    dev = resolve_device(device)
    model, state = load_model(checkpoint, MODELS, challenge="panda", models=["classifier"], map_location=dev)
    manifest = PredictionManifest(out, resolve_checkpoint(checkpoint), {
        "tta": tta, "tiles": None if tiles is None else str(Path(tiles).resolve()),
        "mask_models": [checkpoint_hash(Path(m)) for m in mask_models or []], "skip_missing": skip_missing})
    if not manifest.pending([target.name], [target.exists()], overwrite):
        console.log(f"{target} was made by this checkpoint with the same options: kept (--overwrite to predict again)")
        return None
    tiling = dict(state["meta"]["tiling"])
    test = read_test_csv(Path(data) / "test.csv")
    test = test.iloc[select_part(list(range(len(test))), part)].reset_index(drop=True)
    ids = test["image_id"].tolist()
    masker = _mask_models(checkpoint, state, mask_models, test, dev)
    cache = _check_sources(ids, tiling, Path(data), tiles, tta, skip_missing)
    modes = [0, 2] if tta else [int(tiling.get("mode", 0))]
    dataset = SlideTileDataset(ids, tiling, modes, data=Path(data), cache=cache, skip_missing=skip_missing)
    grades = _grade(model, state["model"]["kwargs"]["encoding"], dataset, test["data_provider"].tolist(), masker,
                    dev, batch_size, workers)
    submission = pd.DataFrame({"image_id": ids, "isup_grade": grades})
    write_csv(target, submission)
    manifest.record(target.name)
    console.log(f"wrote {len(submission)} predictions to {target}")
    return submission


def merge_parts(folder: Path, overwrite: bool = False, target: Path | None = None) -> Path:
    """Join ``folder``'s ``submission.part-K-of-N.csv`` files into ``target`` (default ``folder/submission.csv``).

    Rows follow test.csv's order only within a part, so the merged file is sorted by part then row
    (the metric does not depend on row order).

    Raises:
        DataError: no part files, parts of different N, or a part missing.
    """
    folder = Path(folder)
    target = target or folder / SUBMISSION
    if target.exists() and not overwrite:
        raise DataError(target, "exists already: pass --overwrite to merge the parts again")
    parts = {}
    for path in sorted(folder.glob("submission.part-*-of-*.csv")):
        match = PART_FILE.fullmatch(path.name)
        if match:
            parts[(int(match[1]), int(match[2]))] = path
    if not parts:
        raise DataError(folder, "no submission.part-K-of-N.csv files to merge (written by predict --part K/N)")
    totals = {n for _, n in parts}
    if len(totals) != 1:
        raise DataError(folder, f"parts of different splits ({', '.join(f'of {n}' for n in sorted(totals))})")
    n = totals.pop()
    missing = [k for k in range(1, n + 1) if (k, n) not in parts]
    if missing:
        raise DataError(folder, f"part(s) {', '.join(f'{k}/{n}' for k in missing)} not written yet")
    frames = [pd.read_csv(parts[(k, n)], dtype={"image_id": str}) for k in range(1, n + 1)]
    write_csv(target, pd.concat(frames, ignore_index=True))
    console.log(f"merged {n} part(s) into {target}")
    return target


def resolve_predictions(path: Path, scratch: Path) -> Path:
    """The submission CSV ``evaluate --predictions`` means: a CSV itself, or a predict folder's file.

    A folder with only part files is merged (all N parts must be there) into ``scratch`` (the
    evaluation folder: the predictions folder may be read-only or shared), as ``merged_submission.csv``.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / SUBMISSION).is_file():
        return path / SUBMISSION
    Path(scratch).mkdir(parents=True, exist_ok=True)
    return merge_parts(path, overwrite=True, target=Path(scratch) / "merged_submission.csv")
