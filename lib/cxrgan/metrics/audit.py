"""Memorisation audit: is any generated image a near-copy of a real training image?

For every generated image, its nearest real training image; the same for every real held-out image (validation
and test: patients the generator never saw). A generated image closer to a training image than all but
``quantile`` of the held-out images are counts as a near-copy. Two spaces:

- pixels: the root-mean-square pixel difference (0-1 scale) on the images' overlap, minimised over translations of
  up to ``max_shift`` pixels each way (±4 px at 64x64), so a copy moved by a few pixels is still a copy;
- features: Euclidean distance between feature vectors (a chest X-ray network's penultimate layer).

The threshold is a low quantile of the held-out distances, so it rests on a few images; its bootstrap interval
(resampling the held-out images) and the near-copy count's interval under it are reported with it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.pixels import pixel_images, shifted_nearest
from ..figures import plt, save_figure, save_grid


def pixel_vectors(images: np.ndarray, side: int = 64) -> np.ndarray:
    """uint8 (n, H, W) -> float32 (n, side*side) in [0, 1], area-downsampled so large images stay cheap."""
    return pixel_images(images, side).reshape(len(images), -1)


def default_max_shift(side: int) -> int:
    """Translations the pixel audit forgives: 4 px at 64x64, in proportion at other sizes (at least 1)."""
    return max(1, round(side / 16))


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


@torch.no_grad()
def audit_space(synthetic: np.ndarray, train: np.ndarray, held_out: np.ndarray, quantile: float = 0.01,
                max_shift: int | None = None, n_boot: int = 1000, seed: int = 0, device="cpu") -> dict:
    """Near-copy count in one space: generated-to-train distances against held-out-to-train distances. Feature
    vectors (n, d) use Euclidean distance; with ``max_shift`` the inputs are images (n, s, s) and the distance is
    the shift-tolerant RMS pixel difference."""
    if max_shift is None:
        d_syn, i_syn = nearest(synthetic, train)
        d_held, _ = nearest(held_out, train)
        shifts, rule = None, "Euclidean distance"
    else:
        d_syn, i_syn, shifts = shifted_nearest(synthetic, train, max_shift, device)
        d_held, _, _ = shifted_nearest(held_out, train, max_shift, device)
        rule = f"RMS pixel difference, minimised over translations up to ±{max_shift} px"
    threshold = float(np.quantile(d_held, quantile))
    rng = np.random.default_rng(seed)
    boot_t = np.quantile(rng.choice(d_held, (n_boot, len(d_held))), quantile, axis=1)
    boot_n = (d_syn[None, :] < boot_t[:, None]).sum(1)
    result = {"near_copies": int((d_syn < threshold).sum()), "near_copy_threshold": threshold,
              "near_copy_threshold_ci95": [float(x) for x in np.percentile(boot_t, [2.5, 97.5])],
              "near_copies_ci95": [int(x) for x in np.percentile(boot_n, [2.5, 97.5])],
              "near_copies_expected_by_chance": quantile * len(d_syn), "n_held_out": int(len(d_held)),
              "distance": rule,
              "threshold_rule": f"{quantile:g} quantile of {len(d_held)} real held-out-to-train nearest distances",
              "synthetic_to_train_median": float(np.median(d_syn)),
              "held_out_to_train_median": float(np.median(d_held)),
              "distances": d_syn, "nearest_train": i_syn, "test_distances": d_held}
    if shifts is not None:
        result["best_shift"] = shifts
    return result


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
