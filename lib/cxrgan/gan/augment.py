"""Differentiable augmentation for GANs on limited data (Zhao et al. 2020, "DiffAugment").

The same random transforms are applied to real and generated images before the discriminator sees them, and
gradients flow through them to the generator, so the discriminator cannot memorise the few real images while
the generator still learns the un-augmented distribution. No horizontal flips: chest X-rays have laterality.
Images are in [-1, 1]; -1 is black (air), so translation pads with black.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "brightness", "contrast")


def parse_policy(policy: str | tuple | list) -> tuple[str, ...]:
    parts = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    parts = [p for p in parts if p and p != "none"]
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(POLICIES)} or none")
    return tuple(parts)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y (whole pixels), filling with black."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None] - dy  # source row of each output pixel
    cols = torch.arange(w, device=x.device)[None, None, :] - dx
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # index 0 and -1 of the padded image are black
    rows = (rows + 1).clamp(0, h + 1)
    cols = (cols + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set one random square of ``ratio`` x the image size per image to 0 (mid-gray)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1, (n, 1, 1), device=x.device)  # centre; the square may overhang the border
    cx = torch.randint(0, w + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)) & ((xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw))
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"brightness": brightness, "contrast": contrast, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    for name in ("brightness", "contrast", "translation", "cutout"):  # colour first, then geometry (as the paper)
        if name in policy:
            x = _OPS[name](x)
    return x
