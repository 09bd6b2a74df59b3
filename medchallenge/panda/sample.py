"""A small synthetic PANDA dataset in the real layout, with a grade a classifier can learn.

Each slide is tissue (a few ellipses) on white. Cancer regions inside the tissue take the
colour of their Gleason pattern — pattern 3 mauve, 4 purple, 5 dark violet, with denser nuclei —
and cover more of the tissue as the grade rises; the primary pattern covers about two thirds of
the cancer and the secondary the rest, so the ISUP grade follows from what the darkest tiles
look like, as on real slides. Masks label the same regions (Radboud 0–5, Karolinska 0–2).
Images are drawn at level-1 resolution and repeated ×4 for level 0 (texture finer than a level-1
pixel would not be seen by a level-1 pipeline anyway).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core.io import write_csv
from medchallenge.core.wsi import write_pyramid_tiff
from medchallenge.panda.data import mask_path, slide_path

BENIGN = np.array([228, 168, 206], np.float32)
STROMA = np.array([238, 190, 214], np.float32)
PATTERN_COLOUR = {3: np.array([186, 120, 190], np.float32), 4: np.array([140, 82, 166], np.float32),
                  5: np.array([92, 44, 126], np.float32)}
NUCLEUS = np.array([80, 40, 110], np.float32)
ISUP_TO_GLEASON = {1: ["3+3"], 2: ["3+4"], 3: ["4+3"], 4: ["4+4", "3+5", "5+3"], 5: ["4+5", "5+4", "5+5"]}
CASTS = {"radboud": np.array([0, 0, 0], np.float32), "karolinska": np.array([-6, 4, -4], np.float32)}


def _ellipses(shape: tuple[int, int], n: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    mask = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ay, ax = rng.uniform(0.5, 1.0) * scale * h, rng.uniform(0.5, 1.0) * scale * w
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        mask |= (u / ax) ** 2 + (v / ay) ** 2 <= 1
    return mask


def _blobs_inside(tissue: np.ndarray, fraction: float, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Random discs inside ``tissue`` until about ``fraction`` of it is covered."""
    h, w = tissue.shape
    yy, xx = np.ogrid[:h, :w]
    region = np.zeros_like(tissue)
    target = fraction * tissue.sum()
    points = np.argwhere(tissue)
    for _ in range(200):
        if region.sum() >= target or len(points) == 0:
            break
        cy, cx = points[rng.integers(len(points))]
        r = rng.uniform(0.6, 1.4) * radius
        region |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & tissue
    return region


def draw_slide(grade: int, gleason: str, provider: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One slide at level-1 resolution: (RGB H×W×3 uint8, mask labels H×W uint8), H = W = size / 4."""
    side = size // 4
    tissue = _ellipses((side, side), int(rng.integers(2, 5)), rng, scale=0.22)
    labels = np.zeros((side, side), np.uint8)
    stroma = _blobs_inside(tissue, 0.35, rng, side * 0.05)
    labels[tissue] = 2 if provider == "radboud" else 1
    labels[stroma] = 1
    colour = np.full((side, side, 3), 255.0, np.float32)
    colour[tissue] = BENIGN
    colour[stroma] = STROMA
    nucleus_p = np.where(tissue, 0.04, 0.0)
    if grade > 0:
        primary, secondary = (int(p) for p in gleason.split("+"))
        cancer = _blobs_inside(tissue, 0.2 + 0.08 * grade, rng, side * 0.06)
        second = _blobs_inside(cancer, 0.33, rng, side * 0.04) if secondary != primary else np.zeros_like(cancer)
        for pattern, region in ((primary, cancer & ~second), (secondary, second)):
            colour[region] = PATTERN_COLOUR[pattern]
            nucleus_p = np.where(region, 0.04 + 0.05 * (pattern - 2), nucleus_p)
            labels[region] = pattern if provider == "radboud" else 2
    nuclei = rng.random((side, side)) < nucleus_p
    colour[nuclei] = NUCLEUS
    noise = rng.normal(0.0, 7.0, (side, side, 3)).astype(np.float32)
    colour = np.where(tissue[..., None], colour + noise + CASTS[provider], colour)
    return colour.clip(0, 255).astype(np.uint8), labels


def _hex_id(rng: np.random.Generator) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, 16, dtype=np.uint8))


def write_sample_dataset(out: Path, n_slides: int = 24, seed: int = 0, size: int = 2048,
                         test_fraction: float = 0.25) -> dict[str, int]:
    """Write ``n_slides`` synthetic slides in the PANDA layout (+ ``answers/test_labels.csv``).

    Args:
        out: the dataset folder.
        size: level-0 width and height in px (a multiple of 64; level 1 is size/4, level 2 size/16).

    Returns:
        ``{"train": n_train, "test": n_test}``.
    """
    out = Path(out)
    size = max(256, size // 64 * 64)
    rng = np.random.default_rng(seed)
    grades = rng.permutation(np.arange(n_slides) % 6)
    n_test = max(1, int(round(n_slides * test_fraction)))
    rows = []
    for i, grade in enumerate(grades):
        provider = "radboud" if i % 2 == 0 else "karolinska"
        if grade == 0:
            gleason = "negative" if provider == "radboud" else "0+0"
        else:
            gleason = str(rng.choice(ISUP_TO_GLEASON[int(grade)]))
        rows.append({"image_id": _hex_id(rng), "data_provider": provider, "isup_grade": int(grade),
                     "gleason_score": gleason})
    frame = pd.DataFrame(rows)
    test = frame.iloc[:n_test].reset_index(drop=True)
    train = frame.iloc[n_test:].reset_index(drop=True)
    for split, part in (("test", test), ("train", train)):
        for row in part.itertuples(index=False):
            rgb, labels = draw_slide(row.isup_grade, row.gleason_score, row.data_provider, size, rng)
            level0 = np.repeat(np.repeat(rgb, 4, axis=0), 4, axis=1)
            write_pyramid_tiff(slide_path(out, split, row.image_id), level0)
            if split == "train":
                mask = np.zeros((*labels.shape, 3), np.uint8)
                mask[..., 0] = labels
                write_pyramid_tiff(mask_path(out, row.image_id), np.repeat(np.repeat(mask, 4, 0), 4, 1), labels=True)
    write_csv(out / "answers" / "test_labels.csv", test)
    write_csv(out / "test.csv", test[["image_id", "data_provider"]])
    write_csv(out / "sample_submission.csv", test[["image_id"]].assign(isup_grade=0))
    write_csv(out / "train.csv", train)  # last: its presence marks a complete dataset
    return {"train": len(train), "test": len(test)}
