"""`--max-images` and batch packing: the sampler packs patients by their capped bag sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medchallenge.core.engine import TrainConfig
from medchallenge.lympho.train import LymphoOptions, LymphoTrainer

SIZES = [10, 12, 9, 15, 11, 10, 13, 8, 14, 9, 12, 10]  # every bag larger than the cap below


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    """A hand-built cache: 12 patients (alternating labels), n×3×16×16 uint8 bags."""
    root = tmp_path / "cache"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["ID,LABEL,n_images,AGE,LYMPH_COUNT,GENDER,BIRTH_YEAR,BIRTH_MONTH"]
    for k, n in enumerate(SIZES):
        np.save(root / "images" / f"P{k}.npy", rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8))
        rows.append(f"P{k},{k % 2},{n},{50 + k},{5 + k},M,{1970 - k},{1 + k % 12}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    (root / "meta.json").write_text(json.dumps({"kind": "lympho-crops", "format": 1, "version": "0",
                                                "settings": {"crop": 16}}))
    return root


def _trainer(cache: Path, tmp_path: Path, max_images: int | None, budget: int, patients: int = 32) -> LymphoTrainer:
    config = TrainConfig(out=tmp_path / "run", batch_size=patients, device="cpu", workers=0, seed=3)
    options = LymphoOptions(cache=cache, pretrained=False, val_fraction=0.25, max_batch_images=budget,
                            max_images=max_images)
    return LymphoTrainer(config, options)


@pytest.mark.parametrize("epoch", [0, 1])
def test_packing_uses_the_capped_bag_size(cache: Path, tmp_path: Path, epoch: int) -> None:
    """Cap 4, budget 8: every capped bag holds 4 images, so batches pack two patients each."""
    trainer = _trainer(cache, tmp_path, max_images=4, budget=8)
    loader = trainer.train_loader()
    loader.batch_sampler.set_epoch(epoch)
    n_train = len(trainer.train_index)
    batches = list(loader.batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(n_train))  # each patient once
    assert [len(b) for b in batches] == [2] * (n_train // 2) + [1] * (n_train % 2)
    assert len(loader) == math.ceil(n_train / 2)
    seen = 0
    for images, bags, labels, _ in loader:
        assert images.shape[0] == 4 * len(labels) <= 8  # the dataset's cap, the sampler's budget
        assert torch_bincount(bags) == [4] * len(labels)
        seen += len(labels)
    assert seen == n_train


def test_no_cap_packs_by_full_size_and_validation_is_uncapped(cache: Path, tmp_path: Path) -> None:
    """Without --max-images, packing by the full sizes stays within the budget (a bigger bag alone);
    validation always sees whole bags, packed by their full sizes."""
    trainer = _trainer(cache, tmp_path, max_images=None, budget=24)
    sizes = trainer.train_index["n_images"].tolist()
    batches = list(trainer.train_loader().batch_sampler)
    assert all(sum(sizes[i] for i in b) <= 24 for b in batches)
    assert any(len(b) > 1 for b in batches)
    capped = _trainer(cache, tmp_path, max_images=4, budget=24)
    val_sizes = capped.val_index["n_images"].tolist()
    loader = capped._loader(capped.val_index, train=False)
    got = [n for _, bags, _, _ in loader for n in torch_bincount(bags)]
    assert got == val_sizes  # unshuffled, uncapped
    assert all(sum(val_sizes[i] for i in b) <= 24 for b in loader.batch_sampler)


def torch_bincount(bags) -> list[int]:  # type: ignore[no-untyped-def]
    """Images per bag in a collated batch."""
    return bags.bincount().tolist()


@pytest.mark.parametrize("patients", [1, 2, 3])
def test_batch_size_caps_the_patients_per_batch(cache: Path, tmp_path: Path, patients: int) -> None:
    """--batch-size bounds the patients of a batch below the image budget (here never reached)."""
    trainer = _trainer(cache, tmp_path, max_images=4, budget=1000, patients=patients)
    n_train = len(trainer.train_index)
    batches = list(trainer.train_loader().batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(n_train))
    assert [len(b) for b in batches] == [patients] * (n_train // patients) + [n_train % patients] * (n_train % patients > 0)
    val = list(trainer._loader(trainer.val_index, train=False).batch_sampler)
    assert max(len(b) for b in val) <= patients


def test_image_budget_still_binds_with_a_large_batch_size(cache: Path, tmp_path: Path) -> None:
    trainer = _trainer(cache, tmp_path, max_images=4, budget=8, patients=100)
    assert max(len(b) for b in trainer.train_loader().batch_sampler) == 2
