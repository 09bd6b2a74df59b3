"""PANDA submission: ISUP grade per test slide from a checkpoint, as ``image_id,isup_grade``.

From raw slides (``--data``) the tiles are cut on the fly, as a Kaggle kernel must (no cache on
disk); ``--tta`` averages the scores of mode-0 and mode-2 tilings and of the 8 dihedral views of
every tile. Several checkpoints (an ensemble) average their scores; the averaged ordinal score is
graded with the cut-offs ``--threshold`` resolves (tuned on validation and stored, by default). From a tile cache
(``--cache``) the cached tiles are used. ``predict --out DIR`` writes ``DIR/submission.csv``, one
row per ``test.csv`` id in its order, atomically. With ``--part K/N`` each part writes
``DIR/submission.part-K-of-N.csv`` (every N-th id), and the part that finds all N written by the
same checkpoint and options joins them into ``DIR/submission.csv`` (core.parts' one rule);
``evaluate --predictions DIR`` reads the parts when the joined file is not there, and
``panda predict --merge-parts --out DIR`` joins them by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_models
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.inference import dihedral, mean_probabilities
from medchallenge.core.io import write_csv, write_json
from medchallenge.core.manifest import PredictionManifest, checkpoint_hash
from medchallenge.core.parts import complete_parts, merge_when_complete, part_path, select_part
from medchallenge.core.runs import resolve_checkpoint
from medchallenge.core.thresholds import resolve_threshold
from medchallenge.panda import encoding as enc
from medchallenge.panda.cutoffs import FIXED, parse_cutoffs
from medchallenge.panda.data import read_test_csv, slide_path
from medchallenge.panda.models import MODELS
from medchallenge.panda.segpredict import MaskModels
from medchallenge.panda.slides import SlideTileDataset
from medchallenge.panda.tiles import TileCache

SUBMISSION = "submission.csv"


def submission_file(out: Path, part: str | None) -> Path:
    """``out/submission.csv``, or ``out/submission.part-K-of-N.csv`` for ``--part K/N``."""
    return part_path(Path(out) / SUBMISSION, part)


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


def _check_sources(ids: list[str], tiling: dict[str, Any], data: Path, tiles: Path | None,
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
    cache = TileCache(tiles)
    for key in ("level", "tile_size", "n_tiles"):
        if int(cache.meta[key]) != int(tiling[key]):
            raise OptionError(f"{tiles}: tiled with {key}={cache.meta[key]} but the checkpoint was trained with"
                              f" {key}={tiling[key]}")
    absent = sorted(set(ids) - set(cache.index["image_id"]))
    if absent:
        raise DataError(tiles, f"{len(absent)} test.csv id(s) not in the tile cache, e.g. {absent[0]}")
    return cache


def mean_scores(models: list[torch.nn.Module], encoding: str, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Scores (:func:`encoding.scores`, B×K) of tile stacks ``x`` (B×N×C×T×T) averaged over the models and,
    with ``tta``, over the 8 dihedral transforms of every tile (``core.inference``)."""
    if encoding != "tile-vote":  # per-slide outputs: core's mean over models and views
        activation = "softmax" if encoding == "class" else "sigmoid"
        return mean_probabilities(models, x, tta=tta, views=8, activation=activation)
    views = range(8) if tta else (0,)  # per-tile outputs (B×N×6): averaged the same way, softmax per tile
    total = sum(enc.scores(encoding, model(dihedral(x, k) if k else x)) for model in models for k in views)
    return total / (len(models) * len(views))  # type: ignore[operator]


@torch.inference_mode()
def _grade(models: list[torch.nn.Module], encoding: str, dataset: SlideTileDataset, providers: list[str],
           masker: MaskModels | None, dev: torch.device, batch_size: int, workers: int, tta: bool,
           cutoffs: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(ISUP grade, continuous score) of every slide of ``dataset``: scores averaged over the models,
    tiling modes and, with ``tta``, the dihedral views, then graded by ``cutoffs`` (a missing slide: 0)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = amp_dtype(dev)
    grades = np.zeros(len(dataset), dtype=np.int64)
    values = np.zeros(len(dataset), dtype=np.float64)
    for views, index, present in console.track(loader, "predict", total=len(loader)):
        b, v = views.shape[:2]
        flat = views.reshape(b * v, *views.shape[2:])
        if masker is not None:  # B·V×N×3×T×T → B·V×N×4×T×T, each slide through its provider's U-Net
            channels = [masker.channel(flat[j].numpy(), providers[int(index[j // v])]) for j in range(b * v)]
            flat = torch.cat([flat, torch.from_numpy(np.stack(channels))], dim=2)
        flat = flat.to(dev, non_blocking=True)
        with autocast(dev, dtype):
            probs = mean_scores(models, encoding, flat, tta).float()
        probs = probs.reshape(b, v, *probs.shape[1:]).mean(dim=1)  # the tiling modes
        decoded = enc.grade_with_cutoffs(encoding, probs, cutoffs).cpu().numpy()
        decoded[~present.numpy()] = 0
        grades[index.numpy()] = decoded
        values[index.numpy()] = enc.slide_score(encoding, probs).cpu().numpy()
    return grades, values


def load_ensemble(checkpoints: list[Path], dev: torch.device, threshold: str = "auto"
                  ) -> tuple[list[torch.nn.Module], dict[str, Any], list[float] | None]:
    """(models, the first checkpoint, the cut-offs): the members must share tiling, mask input and encoding."""
    loaded = load_models(checkpoints, MODELS, challenge="panda", models=["classifier"], map_location=dev,
                         same_meta=("tiling", "grades", "mask"))
    models = [model.eval() for model, _ in loaded]
    first = loaded[0][1]
    encoding = first["model"]["kwargs"]["encoding"]
    for path, (_, state) in zip(checkpoints[1:], loaded[1:]):
        if state["model"]["kwargs"]["encoding"] != encoding:
            raise DataError(path, f"cannot ensemble with {checkpoints[0]}: label encoding"
                                  f" {state['model']['kwargs']['encoding']} there {encoding}")
    return models, first, _cutoffs(checkpoints, [state for _, state in loaded], encoding, threshold)


def _cutoffs(checkpoints: list[Path], states: list[dict[str, Any]], encoding: str, threshold: str) -> list[float] | None:
    """``--threshold``: auto → the members' stored cut-offs (their mean; fixed cut-offs for a member that
    stores none), else the 5 given cut-offs. None for encodings that decode without cut-offs."""
    auto = threshold.strip().lower() == "auto"
    if encoding != "ordinal":
        if not auto:
            raise OptionError(f"--threshold {threshold}: the cut-offs grade the ordinal score; {checkpoints[0]}"
                              f" uses the {encoding} encoding (graded by its own decoding)")
        return None
    if not auto:
        return parse_cutoffs(resolve_threshold(threshold, {}, checkpoints[0]), f"--threshold {threshold}")
    if any(state["meta"].get("threshold") is None for state in states):
        console.warn("a checkpoint stores no tuned cut-offs (trained by an older version): fixed cut-offs used for it")
    stored = [parse_cutoffs(resolve_threshold("auto", state["meta"], path, default=list(FIXED)), str(path))
              for path, state in zip(checkpoints, states)]
    return [float(c) for c in np.mean(stored, axis=0)]


def predict_submission(checkpoint: Path | list[Path], out: Path, data: Path = Path("."), tiles: Path | None = None,
                       tta: bool = False, device: str = "auto", batch_size: int = 2, workers: int = 0,
                       skip_missing: bool = False, mask_models: list[Path] | None = None,
                       part: str | None = None, overwrite: bool = False, threshold: str = "auto") -> pd.DataFrame | None:
    """Predict every ``data/test.csv`` slide (this ``part``'s) into the folder ``out``; returns the rows.

    ``checkpoint``: one or several (an ensemble: ordinal scores averaged). ``tta``: tiles of
    modes 0 and 2 (from raw slides) and the 8 dihedral views of every tile (from a cache: the
    cache's mode only). A finished file is kept (None returned) only when these checkpoints made
    it with the same options (``OUT/.manifest``); after retraining, or with other options, it is
    redone and the log says so. A mask-guided (4-channel) classifier needs ``mask_models``: U-Net
    checkpoints of its label scheme covering the test slides' providers (the 4th channel).

    Raises:
        DataError: missing test.csv or slide (unless ``skip_missing``: grade 0 and a warning),
            a corrupt slide, a checkpoint of another challenge or model, members that cannot be
            ensembled, a cache missing test ids.
        OptionError: a cache tiled unlike the training tiles; a 4-channel classifier without
            ``--mask-model`` or ``--mask-model`` with a 3-channel one; a bad ``--threshold``.
    """
    checkpoints = expand_checkpoints([checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint)
    target = submission_file(out, part)
    dev = resolve_device(device)
    models, state, cutoffs = load_ensemble(checkpoints, dev, threshold)
    manifest = PredictionManifest(out, checkpoints, {
        "tta": tta, "tiles": None if tiles is None else str(Path(tiles).resolve()), "cutoffs": cutoffs,
        "mask_models": [checkpoint_hash(resolve_checkpoint(m)) for m in mask_models or []],
        "skip_missing": skip_missing})
    if not manifest.pending([target.name], [target.exists()], overwrite):
        console.log(f"{target} was made by this checkpoint with the same options: kept (--overwrite to predict again)")
        merge_when_complete(Path(out) / SUBMISSION, part, _join_parts, manifest)  # a rerun of a finished part merges
        return None
    tiling = dict(state["meta"]["tiling"])
    test = read_test_csv(Path(data) / "test.csv")
    test = test.iloc[select_part(list(range(len(test))), part)].reset_index(drop=True)
    ids = test["image_id"].tolist()
    masker = _mask_models(checkpoints[0], state, mask_models, test, dev)
    cache = _check_sources(ids, tiling, Path(data), tiles, skip_missing)
    modes = [0, 2] if tta and cache is None else [int(tiling.get("mode", 0))]
    dataset = SlideTileDataset(ids, tiling, modes, data=Path(data), cache=cache, skip_missing=skip_missing)
    grades, _ = _grade(models, state["model"]["kwargs"]["encoding"], dataset, test["data_provider"].tolist(),
                       masker, dev, batch_size, workers, tta, cutoffs)
    submission = pd.DataFrame({"image_id": ids, "isup_grade": grades})
    write_csv(target, submission)
    manifest.record(target.name)
    members = f" ({len(models)} models)" if len(models) > 1 else ""
    console.log(f"wrote {len(submission)} predictions{members} to {target}")
    merge_when_complete(Path(out) / SUBMISSION, part, _join_parts, manifest)
    return submission


def _join_parts(parts: list[Path], target: Path) -> None:
    """Write the rows of ``parts`` (in part order, then row order; the metric ignores row order) to ``target``."""
    frames = [pd.read_csv(path, dtype={"image_id": str}) for path in parts]
    write_csv(target, pd.concat(frames, ignore_index=True))


def merge_parts(folder: Path, overwrite: bool = False, target: Path | None = None) -> Path:
    """Join ``folder``'s ``submission.part-K-of-N.csv`` files into ``target`` (default ``folder/submission.csv``).

    Raises:
        DataError: ``target`` exists (without ``overwrite``), no part files, parts of different N, or a
            part missing (named).
    """
    folder = Path(folder)
    target = target or folder / SUBMISSION
    if target.exists() and not overwrite:
        raise DataError(target, "exists already: pass --overwrite to merge the parts again")
    parts = complete_parts(folder / SUBMISSION)
    _join_parts(parts, target)
    _merge_manifests(folder, parts, target)
    console.log(f"merged {len(parts)} part(s) into {target}")
    return target


def _merge_manifests(folder: Path, parts: list[Path], target: Path) -> None:
    """The merged file's manifest record: the parts' record when one checkpoint and one set of options made
    them all (a rerun of predict then keeps the merged file), none otherwise (a rerun redoes it)."""
    records = []
    for part in parts:
        try:
            records.append(json.loads((folder / ".manifest" / f"{part.name}.json").read_text()))
        except (OSError, json.JSONDecodeError):
            return
    keys = {(r.get("sha256"), r.get("options_key")) for r in records}
    if len(keys) == 1 and target.parent == folder:
        write_json(folder / ".manifest" / f"{target.name}.json", records[0])


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
