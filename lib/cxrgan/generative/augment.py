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


# ----------------------------------------------------------------------------------------------------------------
# Adaptive discriminator augmentation (Karras et al. 2020, "StyleGAN2-ADA"): every transform is applied to each
# image with probability p, and p is tuned during training from how sure the discriminator is of the real images.


def ada_augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """Each of these, independently per image with probability ``p``: an integer translation of up to 1/8 of the
    size, an isotropic scale (log-normal, sd 0.2 ln 2), a rotation (uniform, +-10 degrees), brightness (+N(0, 0.2)),
    contrast (x log-normal, sd 0.5 ln 2), cutout (a square of half the size set to mid-gray). Geometry is one
    bilinear resampling with black outside the image; all differentiable. No flips: chest X-rays have laterality.
    ``p`` = 0 returns ``x`` itself."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype

    def chosen():  # (n,) 1.0 where the transform applies to that image
        return (torch.rand(n, device=dev) < p).to(dt)

    tx = torch.randint(-(w // 8), w // 8 + 1, (n,), device=dev).to(dt) * 2 / w * chosen()
    ty = torch.randint(-(h // 8), h // 8 + 1, (n,), device=dev).to(dt) * 2 / h * chosen()
    scale = torch.exp2(torch.randn(n, device=dev, dtype=dt) * 0.2 * chosen())
    angle = (torch.rand(n, device=dev, dtype=dt) * 2 - 1) * (10 * torch.pi / 180) * chosen()
    if bool((tx != 0).any() or (ty != 0).any() or (scale != 1).any() or (angle != 0).any()):
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input coordinates
        theta = torch.stack([torch.stack([cos, -sin, -tx], 1), torch.stack([sin, cos, -ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    x = x + torch.randn(n, 1, 1, 1, device=dev, dtype=dt) * 0.2 * chosen()[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * torch.exp2(torch.randn(n, 1, 1, 1, device=dev, dtype=dt) * 0.5
                                * chosen()[:, None, None, None]) + mean
    return x * (1 - chosen()[:, None, None, None] * _cutout_mask(x))


def _cutout_mask(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W): 1 inside one random square of half the image size per image (it may overhang the border)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h + 1, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy - h // 4) & (ys < cy - h // 4 + h // 2) & (xs >= cx - w // 4) & (xs < cx - w // 4 + w // 2)
    return inside.unsqueeze(1).to(x.dtype)


class AdaptiveP:
    """ADA's controller: after every ``interval`` discriminator steps, r_t = E[sign(D(real))] over them; p moves
    up by ``batch * interval / (ada_kimg * 1000)`` when r_t is above ``target`` (the discriminator is sure of the
    real images: it is overfitting them) and down by as much otherwise, within [0, 1]. ``p`` can thus go from 0 to 1
    within ``ada_kimg`` thousand images."""

    def __init__(self, target: float, ada_kimg: float, batch: int, interval: int = 4, p: float = 0.0):
        self.target, self.step_size, self.interval = target, batch * interval / (ada_kimg * 1000), interval
        self.p = float(p)
        self._signs, self._count, self._steps = 0.0, 0, 0
        self.last_rt: float | None = None

    def observe(self, sign_sum: float, count: int) -> None:
        """Feed one step's sum of sign(D(real)) over ``count`` augmented real images (all processes); adjusts p
        every ``interval`` steps."""
        self._signs += float(sign_sum)
        self._count += int(count)
        self._steps += 1
        if self._steps == self.interval:
            self.last_rt = self._signs / max(self._count, 1)
            self.p = min(1.0, max(0.0, self.p + (1 if self.last_rt > self.target else -1) * self.step_size))
            self._signs, self._count, self._steps = 0.0, 0, 0

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, mid-interval included (for checkpoints)."""
        return {"p": self.p, "signs": self._signs, "count": self._count, "steps": self._steps, "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self.p, self._signs, self._count, self._steps = state["p"], state["signs"], state["count"], state["steps"]
        self.last_rt = state.get("last_rt")
