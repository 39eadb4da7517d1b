"""Training plots people would rather look at than read: curves, detection matrix, reliability, sample grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.detection_metrics import Reliability


def plot_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """One panel per metric family (loss, accuracy), one line per split."""
    families = sorted({key.split("_", 1)[1] for key in history})
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.5), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for key, values in history.items():
            if key.endswith(family):
                ax.plot(range(1, len(values) + 1), values, marker="o", label=key.split("_", 1)[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel(family)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_detections(matrix: np.ndarray, rows: list[str], columns: list[str], path: Path, title: str) -> None:
    """Share of each row's windows where each column was detected (rows: true content; a multi-label
    confusion matrix, so a row need not sum to 1)."""
    # A user's data may name hundreds of species: cells shrink so the figure stays within ~30 inches
    # (at 0.42 inch a cell, 1,500 species took 12 GB), and lose their numbers once they are too small.
    cell = min(0.42, 28 / max(len(columns), len(rows)))
    fig, ax = plt.subplots(figsize=(1.5 + cell * len(columns), 1.2 + cell * len(rows)))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ticks = 7 if cell == 0.42 else max(1.0, 16 * cell)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=ticks)
    ax.set_yticks(range(len(rows)), rows, fontsize=ticks)
    for i, j in zip(*np.nonzero(matrix >= 0.005), strict=True) if cell == 0.42 else ():
        ax.text(
            j,
            i,
            f"{matrix[i, j]:.2f}"[1:] if matrix[i, j] < 1 else "1",
            ha="center",
            va="center",
            fontsize=5.5,
            color="white" if matrix[i, j] > 0.5 else "black",
        )
    ax.set_xlabel("detected")
    ax.set_ylabel("true content of the window")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(before: Reliability, after: Reliability, path: Path, title: str) -> None:
    """Reliability diagram (score vs share of true detections per bin) and the pair counts per bin."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    for name, rel, style in (("uncalibrated", before, "s-"), ("calibrated", after, "o-")):
        top.plot(rel.confidence, rel.precision, style, markersize=4, label=f"{name} (ECE {rel.ece:.3f})")
    top.set_ylabel("share of pairs truly present (precision)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    top.set_title(title, fontsize=9)
    bottom.bar(after.confidence, after.count, width=1 / 15 * 0.8, color="tab:orange")
    bottom.set_yscale("log")
    bottom.set_xlabel("score (window, species pair)")
    bottom.set_ylabel("pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_image_grid(images: np.ndarray, path: Path, columns: int = 8, scale: int = 4) -> None:
    """[n, H, W, 3] uint8 -> one PNG grid, nearest-neighbour upscaled so small images stay visible."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = img
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)
