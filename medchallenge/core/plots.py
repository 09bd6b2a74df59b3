"""Plots written as PNG files: training curves, confusion matrices, overlays (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.io import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_training_curves(history: Sequence[dict[str, Any]], folder: str | Path, monitor: str | None = None) -> None:
    """``loss.png`` (train loss, and val loss when present) and ``metrics.png`` (every other number)."""
    if not history:
        return
    plt = _pyplot()
    folder = Path(folder)
    epochs = [row["epoch"] for row in history]
    keys = [k for k in history[-1] if k not in ("epoch", "lr", "time_s", "peak_gpu_mem_gb", "train_samples_per_s", "data_wait_share")]
    loss_keys = [k for k in keys if "loss" in k]
    metric_keys = [k for k in keys if k not in loss_keys]
    for name, group in (("loss", loss_keys), ("metrics", metric_keys)):
        if not group:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in group:
            values = [row.get(key, np.nan) for row in history]
            values = [np.nan if v is None else float(v) for v in values]
            style = "-o" if key == monitor else "-"
            ax.plot(epochs, values, style, label=key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, folder / f"{name}.png")
        plt.close(fig)


def plot_confusion_matrix(
    matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "confusion matrix"
) -> None:
    """A confusion matrix (rows: truth, columns: prediction) with counts in the cells."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > top / 2 else "black", fontsize=8)
    _save(fig, Path(path))
    plt.close(fig)


def overlay_labels(
    image: np.ndarray, labels: np.ndarray, colors: dict[int, tuple[int, int, int]], alpha: float = 0.45
) -> np.ndarray:
    """Blend a label map over an image.

    Args:
        image: H×W (grey, any range) or H×W×3 uint8.
        labels: H×W integer labels; 0 stays transparent.
        colors: label → RGB.

    Returns:
        H×W×3 uint8.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        lo, hi = float(np.min(img)), float(np.max(img))
        grey = ((img - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)
        img = np.repeat(grey[..., None], 3, axis=2)
    out = img.astype(np.float32)
    for label, rgb in colors.items():
        sel = labels == label
        out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(rgb, dtype=np.float32)
    return out.clip(0, 255).astype(np.uint8)


def save_image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, cols: int = 4) -> None:
    """Save RGB images (H×W×3 uint8) side by side with titles."""
    plt = _pyplot()
    n = len(images)
    if n == 0:
        return
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    _save(fig, Path(path))
    plt.close(fig)


def plot_per_case(rows: Sequence[dict[str, Any]], keys: Sequence[str], labels: Sequence[str], path: str | Path,
                  title: str, ylabel: str = "Dice per case") -> None:
    """A box per score (``keys`` of each row) with the cases drawn as points; NaN scores are left out."""
    plt = _pyplot()
    values = [[float(r[k]) for r in rows if r[k] is not None and np.isfinite(float(r[k]))] for k in keys]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(keys), 4))
    ax.boxplot(values, tick_labels=list(labels))
    for i, v in enumerate(values, start=1):
        ax.scatter(np.full(len(v), i), v, s=10, alpha=0.6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (n={len(rows)})")
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
