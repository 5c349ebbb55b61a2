"""Residual class-conditional GAN networks for limited data (SNGAN/BigGAN-style blocks, as the small-data
literature builds them), one model for all classes.

Generator: a linear stem to 4x4, then residual up-blocks (conditional batch norm -> ReLU -> nearest 2x upsample ->
3x3 convolution, twice, with a 1x1 upsampled shortcut), then batch norm, ReLU, a 3x3 convolution and tanh.
Discriminator: residual down-blocks with spectral norm (ReLU -> 3x3 -> ReLU -> 3x3 -> 2x2 average pool, with a
1x1 pooled shortcut), a minibatch standard deviation channel before the last block (Karras et al. 2018: the
discriminator sees how varied a group of images is, so a generator that makes one image is easy to spot), global
sum pooling and a projection head (logit = w.h + embed(y).h). Widths follow ``dcgan.width_multipliers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from .cgan import ConditionalBatchNorm, xavier_init
from .dcgan import width_multipliers


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int):
        super().__init__()
        self.norm1, self.norm2 = ConditionalBatchNorm(c_in, n_classes), ConditionalBatchNorm(c_out, n_classes)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, y):
        h = F.interpolate(torch.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(torch.relu(self.norm2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResidualGenerator(nn.Module):
    def __init__(self, size: int = 64, latent: int = 100, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        widths = [base * m for m in width_multipliers(size)] + [base]  # 4x4 ... size/2, then size
        self.latent, self.c0 = latent, widths[0]
        self.stem = nn.Linear(latent, 4 * 4 * widths[0])
        self.blocks = nn.ModuleList(UpBlock(a, b, n_classes) for a, b in zip(widths, widths[1:]))
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        xavier_init(self, (nn.Conv2d, nn.Linear))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = self.stem(z.view(z.shape[0], -1)).view(-1, self.c0, 4, 4)
        for block in self.blocks:
            x = block(x, labels)
        return torch.tanh(self.out(torch.relu(self.out_norm(x))))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.first = first  # the input block: no ReLU on the image itself
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        h = self.conv1(x if self.first else torch.relu(x))
        h = F.avg_pool2d(self.conv2(torch.relu(h)), 2)
        return h + F.avg_pool2d(self.shortcut(x), 2)


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: the standard deviation of each feature over a group of ``group`` images (averaged over
    features and positions), the same for every image of the group."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.view(g, n // g, c, h, w).float()
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
    y = y.view(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class ResidualDiscriminator(nn.Module):
    def __init__(self, size: int = 64, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        widths = [base * m for m in width_multipliers(size)[::-1]]  # after each block: size/2 ... 4x4
        blocks = [DownBlock(channels, widths[0], first=True)]
        blocks += [DownBlock(a, b) for a, b in zip(widths[:-2], widths[1:-1])]
        self.blocks = nn.Sequential(*blocks)
        self.last = DownBlock(widths[-2] + 1, widths[-1])  # +1: the minibatch standard deviation channel
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, widths[-1]))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.last(minibatch_std(self.blocks(x)))
        h = torch.relu(h).sum(dim=(2, 3))
        return self.linear(h).flatten() + (self.embed(labels) * h).sum(dim=1)
