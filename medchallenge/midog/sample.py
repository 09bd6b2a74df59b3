"""A small synthetic MIDOG dataset: tiled TIFFs and a MIDOG.json in exactly the real schema.

Images are H&E-like texture with a per-scanner colour cast; mitotic figures are small, dark,
ragged clumps; imposters are larger, paler, round nuclei. Boxes are 50×50 ``[x1, y1, x2, y2]``
around the cells, some centred on half pixels, some crossing the image border. Ids follow the
real numbering (scanner by id range) and include unannotated images from 151–200; the TIFFs carry
a 0.25 µm/px resolution (the pixel size of grand-challenge millimetres). Training images'
annotations go to ``MIDOG.json``; the test images' to ``answers/MIDOG.json`` (same schema).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medchallenge.core.io import atomic_path, write_json

PX_PER_CM = 4e4  # 0.25 µm/px, MIDOG 2021's pixel size, in the resolution tags as scanners write them
CASTS = {0: (0, 0, 0), 1: (-12, 6, 4), 2: (8, -8, -10), 3: (-4, -10, 8)}


def _blob(canvas: np.ndarray, cx: float, cy: float, radius: float, colour: tuple[int, int, int], ragged: float,
          rng: np.random.Generator) -> None:
    h, w = canvas.shape[:2]
    r = int(radius * (1 + ragged) + 2)
    y0, y1, x0, x1 = max(0, int(cy) - r), min(h, int(cy) + r), max(0, int(cx) - r), min(w, int(cx) + r)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    angle = np.arctan2(yy - cy, xx - cx)
    edge = radius * (1 + ragged * np.sin(int(rng.integers(3, 8)) * angle + rng.uniform(0, 6)))
    inside = np.hypot(yy - cy, xx - cx) <= edge
    canvas[y0:y1, x0:x1][inside] = colour


def draw_image(width: int, height: int, scanner: int, n_mitoses: int, n_imposters: int,
               rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]], list[tuple[float, float]]]:
    """(RGB H×W×3 uint8, mitosis centres, imposter centres)."""
    small = rng.normal(0, 1, (height // 16 + 1, width // 16 + 1))
    texture = np.kron(small, np.ones((16, 16)))[:height, :width]
    image = np.empty((height, width, 3), np.float32)
    image[:] = (225, 170, 205)
    image += texture[..., None] * np.array([8, 14, 8], np.float32)
    for _ in range(int(width * height / 4000)):  # ordinary nuclei
        _blob(image, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, 7), (160, 110, 175), 0.05, rng)

    def place() -> tuple[float, float]:
        if rng.random() < 0.15:  # near the border: its 50 px box crosses it
            return float(rng.choice([rng.uniform(2, 15), width - rng.uniform(2, 15)])), float(rng.uniform(20, height - 20))
        return float(rng.uniform(30, width - 30)), float(rng.uniform(30, height - 30))

    mitoses, imposters = [], []
    for _ in range(n_mitoses):
        x, y = place()
        x, y = (x + 0.5, y) if rng.random() < 0.3 else (x, y)
        _blob(image, x, y, rng.uniform(9, 12), (50, 20, 70), 0.35, rng)
        mitoses.append((round(x * 2) / 2, round(y * 2) / 2))
    for _ in range(n_imposters):
        x, y = place()
        _blob(image, x, y, rng.uniform(12, 15), (130, 80, 160), 0.05, rng)
        imposters.append((round(x * 2) / 2, round(y * 2) / 2))
    image += np.array(CASTS[scanner], np.float32) + rng.normal(0, 5, image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), mitoses, imposters


def _schema(images: list[dict], annotations: list[dict]) -> dict:
    return {"info": {"description": "medchallenge synthetic MIDOG"}, "licenses": [],
            "images": images,
            "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
            "annotations": annotations}


def write_sample_dataset(out: Path, n_images: int = 12, width: int = 1024, height: int = 768, seed: int = 0,
                         test_fraction: float = 0.25) -> dict[str, int]:
    """Write ``n_images`` annotated images (+ 2 unannotated ones from ids 151–200)."""
    import tifffile

    out = Path(out)
    rng = np.random.default_rng(seed)
    ids = [int(1 + (k % 3) * 50 + k // 3) for k in range(n_images)]  # spread over the three annotated scanners
    n_test = max(1, int(round(n_images * test_fraction)))
    test_ids = set(ids[-n_test:])
    ids += [151, 152]
    records: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    ann_id = 1
    for image_id in ids:
        scanner = (image_id - 1) // 50
        annotated = image_id < 151
        image, mitoses, imposters = draw_image(width, height, scanner, int(rng.integers(3, 8)) if annotated else 4,
                                               int(rng.integers(4, 10)) if annotated else 4, rng)
        name = f"{image_id:03d}.tiff"
        with atomic_path(out / name) as tmp:
            tifffile.imwrite(tmp, image, tile=(256, 256), photometric="rgb", compression="jpeg",
                             compressionargs={"level": 92}, resolution=(PX_PER_CM, PX_PER_CM),
                             resolutionunit="CENTIMETER")
        split = "test" if image_id in test_ids else "train"
        records[split][0].append({"license": 1, "file_name": name, "id": image_id, "width": width, "height": height})
        if not annotated:
            continue
        for category, centres in ((1, mitoses), (2, imposters)):
            for x, y in centres:
                records[split][1].append({"bbox": [x - 25, y - 25, x + 25, y + 25], "category_id": category,
                                          "image_id": image_id, "id": ann_id})
                ann_id += 1
    write_json(out / "answers" / "MIDOG.json", _schema(*records["test"]))
    write_json(out / "MIDOG.json", _schema(*records["train"]))
    return {"train": n_images - n_test, "test": n_test, "unannotated": 2}


