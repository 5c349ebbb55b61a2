"""Memorisation audit: is any generated image a near-copy of a real training image?

For every generated image, its nearest real training image (Euclidean distance, in pixel space and optionally in
a feature space); the same for every real test image, whose patients the generator never saw. A generated image
closer to a training image than all but ``quantile`` of the real test images are counts as a near-copy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..figures import plt, save_figure, save_grid


def pixel_vectors(images: np.ndarray, side: int = 64) -> np.ndarray:
    """uint8 (n, H, W) -> float32 (n, side*side) in [0, 1], area-downsampled so large images stay cheap."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).unsqueeze(1)
    if x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    return x.flatten(1).numpy()


def nearest(query: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, each query row's nearest reference row."""
    ref = torch.from_numpy(np.asarray(reference, np.float32))
    dists, index = [], []
    for i in range(0, len(query), chunk):
        d = torch.cdist(torch.from_numpy(np.asarray(query[i:i + chunk], np.float32)), ref)
        v, j = d.min(dim=1)
        dists.append(v)
        index.append(j)
    return torch.cat(dists).numpy(), torch.cat(index).numpy()


def audit_space(synthetic: np.ndarray, train: np.ndarray, test: np.ndarray, quantile: float = 0.01) -> dict:
    """Near-copy count in one space: generated-to-train distances against test-to-train distances."""
    d_syn, i_syn = nearest(synthetic, train)
    d_test, _ = nearest(test, train)
    threshold = float(np.quantile(d_test, quantile))
    return {"near_copies": int((d_syn < threshold).sum()), "near_copy_threshold": threshold,
            "threshold_rule": f"{quantile:g} quantile of real test-to-train nearest distances",
            "synthetic_to_train_median": float(np.median(d_syn)), "test_to_train_median": float(np.median(d_test)),
            "distances": d_syn, "nearest_train": i_syn, "test_distances": d_test}


def closest_pairs_figure(path, synthetic_images: np.ndarray, train_images: np.ndarray, result: dict,
                         k: int = 8, title: str = "") -> None:
    """The ``k`` generated images closest to a training image, each followed by its nearest training image
    (pairs side by side, two pairs per row)."""
    order = np.argsort(result["distances"])[:k]
    gen, real = synthetic_images[order], train_images[result["nearest_train"][order]]
    if gen.shape[1:] != real.shape[1:]:  # different sizes: show both at the smaller one
        side = min(gen.shape[-1], real.shape[-1])
        gen, real = (to_side(x, side) for x in (gen, real))
    pairs = np.stack([gen, real], axis=1).reshape(-1, *gen.shape[1:])
    save_grid(path, {"generated | nearest real training image (pairs)": pairs}, title, cols=4)


def to_side(images: np.ndarray, side: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    return F.adaptive_avg_pool2d(x, side).squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()


def distance_histogram(path, result: dict, title: str = "") -> None:
    """Distribution of generated-to-train nearest distances against held-out-real-to-train, with the threshold."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    both = np.concatenate([result["distances"], result["test_distances"]])
    bins = np.linspace(both.min(), both.max(), 40) if len(both) and both.max() > both.min() else 20
    ax.hist(result["test_distances"], bins=bins, alpha=0.6, density=True, label="real held-out to train")
    ax.hist(result["distances"], bins=bins, alpha=0.6, density=True, label="generated to train")
    ax.axvline(result["near_copy_threshold"], color="k", ls="--", lw=1,
               label=f"near-copy threshold ({result['near_copies']} generated below)")
    ax.set_xlabel("distance to the nearest real training image")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
