"""Tile segmentation pieces: the U-Net, label schemes, losses, the tile datasets, mask scoring, checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from medchallenge.core.backbones import create_classifier, enable_gradient_checkpointing
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.losses import soft_dice_loss
from medchallenge.core.metrics import dice_per_class
from medchallenge.panda.labels import check_scheme, mask_channel, to_scheme
from medchallenge.panda.masks import tile_mosaic
from medchallenge.panda.metrics import evaluate_masks
from medchallenge.panda.segtrain import SegTileDataset, cat_slides, class_weights, segmentation_loss
from medchallenge.panda.tiles import TileCache, npz_memmap
from medchallenge.panda.unet import PandaUNet


def test_unet_shapes() -> None:
    model = PandaUNet(6, depth=3, width=4).eval()
    tiles = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert model(tiles).shape == (5, 6, 32, 32)
    odd = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)  # padded to 24×32 inside, cropped back
    assert model(odd).shape == (2, 6, 20, 28)


def test_label_schemes_and_mask_channel() -> None:
    radboud = np.arange(6, dtype=np.uint8)
    assert to_scheme(radboud, "radboud", "unified").tolist() == [0, 1, 1, 2, 2, 2]
    assert to_scheme(np.arange(3, dtype=np.uint8), "karolinska", "unified").tolist() == [0, 1, 2]
    assert to_scheme(radboud, "radboud", "provider").tolist() == list(range(6))
    # the report's scaling: ×255/5 for Radboud, ×255/2 for Karolinska (and the unified scheme)
    assert mask_channel(radboud, "radboud", "provider").tolist() == [0, 51, 102, 153, 204, 255]
    assert mask_channel(np.arange(3, dtype=np.uint8), "karolinska", "provider").tolist() == [0, 128, 255]
    assert mask_channel(np.arange(3, dtype=np.uint8), "radboud", "unified").tolist() == [0, 128, 255]
    assert check_scheme("unified", "both") == ("radboud", "karolinska")
    with pytest.raises(OptionError, match="one model per provider"):
        check_scheme("provider", "both")
    with pytest.raises(OptionError, match="--label-scheme"):
        check_scheme("gleason", "radboud")


def test_dice_per_class_hand_built() -> None:
    matrix = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])  # rows truth, columns prediction; class 2 nowhere
    dice = dice_per_class(matrix)
    assert dice[0] == pytest.approx(10 / 13) and dice[1] == pytest.approx(4 / 7) and np.isnan(dice[2])


def test_segmentation_losses() -> None:
    target = torch.tensor([[[0, 1], [2, 2]]])
    logits = torch.randn(1, 3, 2, 2)
    weight = torch.tensor([0.5, 1.0, 2.0])
    assert segmentation_loss("dice", logits, target, weight) == pytest.approx(soft_dice_loss(logits, target).item())
    ce = F.cross_entropy(logits, target, weight=weight)
    assert segmentation_loss("ce", logits, target, weight) == pytest.approx(ce.item())
    both = segmentation_loss("dice-ce", logits, target, weight)
    assert both == pytest.approx(ce.item() + soft_dice_loss(logits, target).item())
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert segmentation_loss("dice", perfect, target, None).item() == pytest.approx(0.0, abs=1e-4)


A, B, R = "a" * 32, "b" * 32, "c" * 32  # PANDA ids: 32 lowercase hex


def write_cache(root: Path, slides: dict[str, tuple[str, np.ndarray, np.ndarray | None, int]], tile: int) -> Path:
    """A tile cache by hand: id → (provider, tiles N×T×T×3, masks N×T×T or None, n_tissue)."""
    (root / "slides").mkdir(parents=True)
    rows = []
    for image_id, (provider, tiles, masks, n_tissue) in slides.items():
        n = len(tiles)
        arrays = {"tiles": tiles, "xs": np.zeros(n, np.int64), "ys": np.zeros(n, np.int64),
                  "fill": np.arange(n) >= n_tissue + 1, "n_tissue": np.int64(n_tissue)}
        if masks is not None:
            arrays["masks"] = masks
        with open(root / "slides" / f"{image_id}.npz", "wb") as handle:
            np.savez(handle, **arrays)
        rows.append((image_id, provider, 1, n_tissue, masks is not None))
    pd.DataFrame(rows, columns=["image_id", "data_provider", "isup_grade", "n_tissue", "has_mask"]).to_csv(
        root / "index.csv", index=False)
    CacheDir(root, "panda-tiles").open_for_writing({"split": "train", "level": 1, "tile_size": tile, "n_tiles": 4,
                                                    "mode": 0})
    return root


def test_tile_datasets_keep_only_tissue_tiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[:3] = 1  # stroma in the tissue tiles, Gleason 5 in half the first; tile 3 (white) is background
    masks[0, :4] = 5
    cache = TileCache(write_cache(tmp_path / "c", {A: ("radboud", tiles, masks, 3),
                                                   B: ("radboud", tiles, masks, 2)}, 8))
    assert cache.with_masks() == [A, B]
    np.testing.assert_array_equal(npz_memmap(cache.slide_file(A), ("masks",))["masks"], masks)
    frame = cache.index
    per_slide = SegTileDataset(cache, frame, "unified", per_slide=True, augment=False)
    x, y = per_slide[0]
    assert x.shape == (3, 3, 8, 8) and y.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert set(y.unique().tolist()) == {1, 2}  # 5 → cancer (2), 1 → benign (1)
    xb, yb = cat_slides([per_slide[0], per_slide[1]])
    assert xb.shape[0] == yb.shape[0] == 5
    shuffled = SegTileDataset(cache, frame, "unified", per_slide=False, augment=True)
    assert len(shuffled) == 5 and shuffled[4][0].shape == (3, 8, 8)
    weights = class_weights(per_slide, 3)
    counts = np.array([0, 160 + 96, 32 + 32], float)  # tissue tiles only (a: 3, b: 2)
    freq = counts / counts.sum()
    assert weights[2] > weights[1] and (freq * weights).sum() == pytest.approx(1.0)


def test_evaluate_masks_hand_built(tmp_path: Path) -> None:
    tiles = np.full((4, 4, 4, 3), 200, np.uint8)
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0] = 4  # one tile of Gleason 4, one of stroma; tile 3 is a white filler (not scored)
    truth[1] = 1
    truth[3] = 5
    cache = write_cache(tmp_path / "cache", {R: ("radboud", tiles, truth, 2)}, 4)
    folder = tmp_path / "pred"
    (folder / "masks").mkdir(parents=True)
    pred = np.zeros((4, 4, 4), np.uint8)
    pred[0, :2] = 5  # half of the tumour tile found, as another Gleason pattern
    pred[1] = 1
    pred[3] = 0
    np.savez(folder / "masks" / f"{R}.npz", masks=pred)
    (folder / "meta.json").write_text(json.dumps({"scheme": "provider", "tile_size": 4, "n_tiles": 4, "level": 1}))
    pd.DataFrame({"image_id": [R], "data_provider": ["radboud"]}).to_csv(folder / "index.csv", index=False)
    result = evaluate_masks(folder, cache)["providers"]["radboud"]
    assert result["pixels"] == 3 * 16  # fill tile left out
    assert result["dice"]["stroma"] == pytest.approx(1.0)
    assert result["dice"]["Gleason 4"] == pytest.approx(0.0)  # predicted as 5: wrong pattern
    assert result["tumour_dice"] == pytest.approx(2 * 8 / (16 + 8))  # Gleason 3–5 merged: 8 of 16 found
    assert result["dice"]["Gleason 3"] is None  # in neither
    assert result["pixel_accuracy"] == pytest.approx((16 + 16) / 48)
    np.savez(folder / "masks" / f"{R}.npz", masks=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match="do not match image tiles"):
        evaluate_masks(folder, cache)


def test_zero_mask_channel_keeps_pretrained_response(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask-guided classifier starts where the pretrained RGB network was (mask 0 = background)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(create_classifier("resnet18", 1000, pretrained=False).state_dict(),
               tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    rgb = create_classifier("resnet18", 0, in_channels=3, pretrained=True).eval()
    rgbm = create_classifier("resnet18", 0, in_channels=4, pretrained=True).eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(rgbm(torch.cat([x, torch.zeros(2, 1, 64, 64)], 1)), rgb(x))


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet-b0"])
def test_gradient_checkpointing_same_gradients(arch: str) -> None:
    torch.manual_seed(0)
    plain = create_classifier(arch, 3, in_channels=4, pretrained=False).train()
    checkpointed = create_classifier(arch, 3, in_channels=4, pretrained=False).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert enable_gradient_checkpointing(checkpointed, arch) > 0
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(2, 4, 64, 64)
    for model in (plain, checkpointed):
        torch.manual_seed(1)
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(OptionError, match="--grad-checkpoint"):
        enable_gradient_checkpointing(create_classifier("alexnet", 3, pretrained=False), "alexnet")


def test_tile_mosaic_layout() -> None:
    tiles = np.arange(5)[:, None, None] * np.ones((5, 2, 2), int)
    mosaic = tile_mosaic(tiles)
    assert mosaic.shape == (6, 6) and mosaic[0, 2] == 1 and mosaic[2, 0] == 3 and mosaic[5, 5] == 0
