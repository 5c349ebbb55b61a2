"""Sliced Wasserstein distance between image sets on a Laplacian pyramid (Karras et al. 2018, ProGAN, sec. 5).

A quality signal that needs no pretrained network: 7x7 patches are drawn from every level of each image's
Laplacian pyramid, normalised per channel, and the Wasserstein-1 distance between the two patch sets is averaged
over random 1-D projections. Lower is better; each level compares structure at one scale (fine to coarse).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_GAUSS = torch.tensor([1, 4, 6, 4, 1], dtype=torch.float64)
_KERNEL = (_GAUSS[:, None] * _GAUSS[None, :] / 256).float()[None, None]


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _KERNEL.to(x))


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(n, 1, H, W) -> [band-pass at H, at H/2, ..., low-pass at H / 2^(levels-1)]."""
    out = []
    for _ in range(levels - 1):
        down = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = down * 4
        out.append(x - _blur(up))
        x = down
    out.append(x)
    return out


def _patches(level: torch.Tensor, per_image: int, size: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=gen)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=gen)
    offs = torch.arange(size)
    rows = (ys[..., None] + offs)[..., :, None].expand(-1, -1, size, size)
    cols = (xs[..., None] + offs)[..., None, :].expand(-1, -1, size, size)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    return level[:, 0][batch, rows, cols].reshape(-1, size * size)


def _sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, gen: torch.Generator) -> float:
    n = min(len(a), len(b))
    a, b = a[torch.randperm(len(a), generator=gen)[:n]], b[torch.randperm(len(b), generator=gen)[:n]]
    dirs = torch.randn(a.shape[1], projections, generator=gen, dtype=a.dtype)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return float((pa - pb).abs().mean())


def swd(real: np.ndarray, fake: np.ndarray, levels: int | None = None, patches_per_image: int = 64,
        patch: int = 7, projections: int = 512, repeats: int = 4, seed: int = 0) -> dict:
    """SWD per pyramid level (x1e3, as ProGAN reports) and their mean, between two uint8 (n, H, W) image sets."""
    h = real.shape[-1]
    levels = levels or max(1, int(np.log2(h // 16)) + 1)  # down to 16x16
    gen = torch.Generator().manual_seed(seed)
    pyr = [laplacian_pyramid(torch.from_numpy(np.asarray(s, dtype=np.float32))[:, None] / 127.5 - 1, levels)
           for s in (real, fake)]
    result = {}
    for k in range(levels):
        dists = []
        for _ in range(repeats):
            pa = _patches(pyr[0][k], patches_per_image, patch, gen).double()
            pb = _patches(pyr[1][k], patches_per_image, patch, gen).double()
            mean, std = pa.mean(0, keepdim=True), pa.std(0, keepdim=True) + 1e-8  # normalise by the real set
            dists.append(_sliced_wasserstein((pa - mean) / std, (pb - mean) / std, projections, gen))
        result[f"swd_{h >> k}"] = float(np.mean(dists)) * 1e3
    result["swd_mean"] = float(np.mean([v for k, v in result.items()]))
    return result
