"""The diffusion recipes' networks: a compact class-conditional U-Net, wrapped in EDM's preconditioning (Karras et
al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") as ``Denoiser``, or as DDPM's
epsilon-prediction (Ho et al. 2020) as ``EpsDenoiser``. Both are denoisers D(x; sigma, label) on x = image + sigma *
noise, the terms Karras et al. write every diffusion model in: DDPM's x_t at timestep t is sqrt(alpha_bar_t) * x with
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), and its epsilon-prediction is the preconditioning c_skip = 1,
c_out = -sigma. Training losses, noise levels and samplers are ``generative.diffusion``'s (as edm's ``networks.py``
beside its ``generate.py``).

The class label ``n_classes`` means "no class" (classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGMA_DATA = 0.5  # the images' standard deviation in [-1, 1] (chest X-rays: about 0.5)

# ----------------------------------------------------------------------------------------------------------------
# The U-Net


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the noise level and class embedding as a per-channel scale and shift."""

    def __init__(self, c_in: int, c_out: int, emb: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a low-resolution feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(n, c, h, w))


class UNet(nn.Module):
    """A compact U-Net for (n, channels, size, size) inputs: ``levels`` resolutions (halving each time, down to 8x8
    at most), ``blocks`` residual blocks per level, attention at 16x16 and below; the noise level (EDM's c_noise)
    and the class label (``n_classes`` = none) enter every block through one embedding."""

    def __init__(self, size: int, base: int = 64, channels: int = 1, n_classes: int = 2, blocks: int = 1,
                 mults: tuple[int, ...] | None = None, dropout: float = 0.0):
        super().__init__()
        if mults is None:  # 32: 32,16,8; 64: 64,32,16,8; larger: stop at 8x8 with at most 4x the base width
            levels = max(1, int(math.log2(size // 8)) + 1)
            mults = tuple(min(2 ** i, 4) if i else 1 for i in range(levels))
        emb = 4 * base
        self.n_classes = n_classes
        self.noise_emb = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_emb = nn.Embedding(n_classes + 1, emb)  # + 1: "no class", for classifier-free guidance
        self.base = base
        self.stem = nn.Conv2d(channels, base, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        widths, c, res = [base], base, size
        for i, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(_Level(ResBlock(c, base * m, emb, dropout), base * m, res))
                c = base * m
                widths.append(c)
            if i < len(mults) - 1:
                self.down.append(_Downsample(c))
                widths.append(c)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(c, c, emb, dropout), Attention(c), ResBlock(c, c, emb, dropout)])
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(_Level(ResBlock(c + widths.pop(), base * m, emb, dropout), base * m, res))
                c = base * m
            if i > 0:
                self.up.append(_Upsample(c))
                res *= 2
        self.out_norm, self.out = nn.GroupNorm(_groups(c), c), nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.noise_emb(_fourier(c_noise, self.base)) + self.class_emb(labels))
        h, skips = self.stem(x), []
        skips.append(h)
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, _Level) else layer(h, emb)
        return self.out(F.silu(self.out_norm(h)))


class _Level(nn.Module):
    def __init__(self, block: ResBlock, channels: int, res: int):
        super().__init__()
        self.block = block
        self.attn = Attention(channels) if res <= 16 else None

    def forward(self, x, emb):
        x = self.block(x, emb)
        return self.attn(x) if self.attn is not None else x


class _Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x, emb):
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, emb):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _fourier(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the noise level (as for transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    angle = c_noise.float()[:, None] * 1000 * freqs[None] / 4  # c_noise = ln(sigma) / 4 spans about [-2, 1]
    return torch.cat([angle.cos(), angle.sin()], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Preconditioned denoisers: EDM's, and DDPM's epsilon-prediction


class Denoiser(nn.Module):
    """D(x; sigma, label) = c_skip x + c_out F(c_in x; c_noise, label): EDM's preconditioned denoiser."""

    def __init__(self, size: int, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        self.net = UNet(size, base, channels, n_classes)
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
        c_skip = SIGMA_DATA ** 2 / (sigma ** 2 + SIGMA_DATA ** 2)
        c_out = sigma * SIGMA_DATA / (sigma ** 2 + SIGMA_DATA ** 2).sqrt()
        c_in = 1 / (SIGMA_DATA ** 2 + sigma ** 2).sqrt()
        f = self.net((c_in * x).to(x.dtype), (sigma.log() / 4).flatten(), labels)
        return c_skip * x + c_out * f.float()


class EpsDenoiser(Denoiser):
    """DDPM's epsilon-prediction as a denoiser: D(x; sigma) = x - sigma * F(x / sqrt(1 + sigma^2); t)."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
        f = self.net((x / (1 + sigma ** 2).sqrt()).to(x.dtype), (sigma.log() / 4).flatten(), labels)
        return x - sigma * f.float()
