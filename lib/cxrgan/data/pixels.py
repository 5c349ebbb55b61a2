"""Comparing images pixel by pixel, shared by the memorisation audit (metrics.audit) and the provenance check of
synthetic training data (classify.provenance): images in [0, 1], area-downsampled, and each image's nearest
neighbour by RMS difference, optionally minimised over small translations."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pixel_images(images: np.ndarray, side: int = 64) -> np.ndarray:
    """uint8 (n, H, W) -> float32 (n, side, side) in [0, 1], area-downsampled when larger than ``side``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).unsqueeze(1)
    if x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    return x.squeeze(1).numpy()


def shifted_nearest(query: np.ndarray, reference: np.ndarray, max_shift: int, device="cpu",
                    chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For images (n, s, s) in [0, 1]: each query image's smallest RMS difference to any reference image over
    translations (dy, dx) in [-max_shift, max_shift]^2, compared on the overlap; returns (distance, index of the
    reference image, (dy, dx) of the best translation)."""
    q_all = torch.from_numpy(np.asarray(query, np.float32)).to(device)
    ref = torch.from_numpy(np.asarray(reference, np.float32)).to(device)
    s = q_all.shape[-1]
    best_d = torch.full((len(q_all),), float("inf"), device=device)
    best_i = torch.zeros(len(q_all), dtype=torch.long, device=device)
    best_shift = torch.zeros((len(q_all), 2), dtype=torch.long, device=device)
    shifts = sorted(((dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)),
                    key=lambda s: abs(s[0]) + abs(s[1]))  # no shift first: ties keep the smallest move
    for dy, dx in shifts:
        # query pixel (y, x) against reference pixel (y - dy, x - dx): the query is the reference moved by dy, dx
        qy, ry = slice(max(0, dy), s + min(0, dy)), slice(max(0, -dy), s + min(0, -dy))
        qx, rx = slice(max(0, dx), s + min(0, dx)), slice(max(0, -dx), s + min(0, -dx))
        r = ref[:, ry, rx].reshape(len(ref), -1)
        scale = r.shape[1] ** -0.5
        for i in range(0, len(q_all), chunk):
            q = q_all[i:i + chunk, qy, qx].reshape(-1, r.shape[1])
            v, j = (torch.cdist(q, r) * scale).min(dim=1)
            better = v < best_d[i:i + chunk]
            best_d[i:i + chunk] = torch.where(better, v, best_d[i:i + chunk])
            best_i[i:i + chunk] = torch.where(better, j, best_i[i:i + chunk])
            best_shift[i:i + chunk][better] = torch.tensor([dy, dx], device=device)
    return best_d.cpu().numpy(), best_i.cpu().numpy(), best_shift.cpu().numpy()
