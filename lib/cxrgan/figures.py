"""Figures shared by the tools: image grids per class and loss curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .fileio import atomic_output  # noqa: E402


def tile(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 (n, H, W) -> one uint8 mosaic with ``cols`` columns and a 2-pixel black gutter."""
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.zeros((rows * (h + 2) - 2, cols * (w + 2) - 2), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 2): r * (h + 2) + h, c * (w + 2): c * (w + 2) + w] = im
    return out


def save_grid(path: str | Path, panels: dict[str, np.ndarray], title: str = "", cols: int = 8) -> None:
    """One panel per class (name -> uint8 (n, H, W)), side by side, titled; written atomically as PNG."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, images) in zip(axes[0], panels.items()):
        ax.imshow(tile(images, cols), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_losses(csv_path: str | Path, png_path: str | Path, columns=None, x="kimg", ylabel: str = "loss") -> None:
    """Curves of ``columns`` (default: every ``loss*`` column) from a training CSV (raw, and a moving average over
    ~2% of the rows)."""
    df = pd.read_csv(csv_path)
    columns = [c for c in df if c.startswith("loss")] if columns is None else columns
    fig, ax = plt.subplots(figsize=(7, 4))
    window = max(1, len(df) // 50)
    for col in columns:
        if col in df and df[col].notna().any():
            ax.plot(df[x], df[col], alpha=0.25, lw=0.8)
            ax.plot(df[x], df[col].rolling(window, min_periods=1).mean(), lw=1.5, label=col,
                    color=ax.lines[-1].get_color())
    ax.set_xlabel("thousands of real images shown" if x == "kimg" else x)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path)


def save_figure(fig, path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
