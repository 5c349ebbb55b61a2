"""The arithmetic of image-set metrics on feature vectors: FID, KID, Inception Score, precision/recall, and the
spread of a set (median pairwise distance, for pixel-space diversity).

Conventions follow the reference implementations so numbers are comparable: FID as torch-fidelity (float64
moments, trace of the square root from eigenvalues); KID as torch-fidelity (unbiased MMD^2 with the cubic kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets drawn generated-first); IS with 10 splits on bias-free
logits, as the original code; precision/recall as Kynkaanniemi et al. 2019 (k-nearest-neighbour balls, k = 3).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2 (real and non-negative in exact
    arithmetic, as S1 S2 is similar to a PSD matrix; rounding noise is dropped by taking the real part), as
    torch-fidelity computes it. This is faster than a full matrix square root and needs no fallback when the
    covariances are singular (fewer images than feature dimensions)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    tr_covmean = np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)).real.sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*moments(real), *moments(fake))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        coef0: float = 1.0, seed: int = 0, max_kernel_elements: int = 64_000_000) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over ``subsets`` random subsets of the unbiased MMD^2.

    The subsets are drawn as torch-fidelity draws them (generated first, then real, per subset). When the three
    full kernel matrices are smaller than the per-subset ones all together and fit in ``max_kernel_elements``
    float64 values (512 MB by default: up to about 4,600 images per side), they are computed once and each subset
    reads its blocks from them, instead of recomputing three m x m x d products per subset; the values are the
    same up to float64 rounding."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 images per side")
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(fake), m, replace=False), rng.choice(len(real), m, replace=False))
             for _ in range(subsets)]
    d = real.shape[1]

    def kernel(a, b):
        return (a @ b.T / d + coef0) ** degree

    full_elements = len(fake) ** 2 + len(real) ** 2 + len(fake) * len(real)
    if full_elements <= min(max_kernel_elements, 3 * subsets * m * m):
        k_ff, k_rr, k_fr = kernel(fake, fake), kernel(real, real), kernel(fake, real)

        def blocks(i, j):
            return k_ff[np.ix_(i, i)], k_rr[np.ix_(j, j)], k_fr[np.ix_(i, j)]
    else:
        def blocks(i, j):
            x, y = fake[i], real[j]
            return kernel(x, x), kernel(y, y), kernel(x, y)

    values = []
    for i, j in draws:
        k_xx, k_yy, k_xy = blocks(i, j)
        values.append((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                      - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits: np.ndarray, splits: int = 10, seed: int | None = None) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on each of ``splits`` consecutive parts (boundaries i*N//splits, as the original
    code), from classifier logits; mean and std over the parts. ``seed``: shuffle the images first with
    ``np.random.RandomState(seed).permutation`` (torch-fidelity does, with seed 2020 by default)."""
    x = np.asarray(logits, dtype=np.float64)
    if seed is not None:
        x = x[np.random.RandomState(seed).permutation(len(x))]
    if len(x) < splits:
        raise ValueError(f"the Inception Score with {splits} splits needs at least {splits} images")
    log_p = special.log_softmax(x, axis=1)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part_of = slice(i * len(x) // splits, (i + 1) * len(x) // splits)
        part, log_part = p[part_of], log_p[part_of]
        log_py = np.log(part.mean(axis=0, keepdims=True))
        scores.append(np.exp((part * (log_part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of generated samples inside the real manifold (the union of each real sample's ball to its
    k-th nearest real neighbour); recall: share of real samples inside the generated manifold."""
    r, f = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per side")
    r_radius, f_radius = _kth_neighbour_radius(r, k), _kth_neighbour_radius(f, k)
    d = torch.cdist(f, r)  # (n_fake, n_real)
    precision = (d <= r_radius[None, :]).any(dim=1).double().mean()
    recall = (d.T <= f_radius[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def median_pairwise_distance(x: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Median Euclidean distance over all pairs of rows (of a seeded random ``max_n`` of them when there are more):
    the spread of a set. For pixel vectors it needs no feature network; a collapsed generator's images are close
    together, so its spread is far below the real images'."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        raise ValueError("a spread needs at least 2 images")
    if len(x) > max_n:
        x = x[np.random.RandomState(seed).choice(len(x), max_n, replace=False)]
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return float(d[i, j].median())
