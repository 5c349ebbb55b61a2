"""The improved recipe's class-conditional GAN: one model for all classes.

Generator: the DCGAN generator's layout (latent -> 4x4, stride-2 transposed convolutions, tanh out; the same cost
per image as the study-dcgan recipe's) with the class entering every normalisation layer as its own gain and bias
(conditional batch norm, as in SNGAN/BigGAN).
Discriminator: the DCGAN discriminator's stride-2 convolutions, spectrally normalised, without batch norm, then
global sum pooling and a projection head (Miyato & Koyama 2018): logit = w.h + embed(y).h. Widths follow
dcgan.width_multipliers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from .dcgan import width_multipliers


def xavier_init(module: nn.Module, types: tuple) -> None:
    """Xavier-uniform weights and zero biases for every submodule of ``types``, in module order."""
    for m in module.modules():
        if isinstance(m, types):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class ConditionalBatchNorm(nn.Module):
    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(n_classes, channels)
        self.bias = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class UpBlock(nn.Module):
    """conditional batch norm -> ReLU -> 4x4 stride-2 transposed convolution (doubles the resolution)."""

    def __init__(self, c_in: int, c_out: int, n_classes: int):
        super().__init__()
        self.norm = ConditionalBatchNorm(c_in, n_classes)
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)

    def forward(self, x, y):
        return self.conv(torch.relu(self.norm(x, y)))


class ConditionalGenerator(nn.Module):
    def __init__(self, size: int = 64, latent: int = 100, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        mult = width_multipliers(size)
        self.latent = latent
        self.c0 = base * mult[0]
        self.stem = nn.Linear(latent, 4 * 4 * self.c0)
        widths = [base * m for m in mult] + [channels]
        self.blocks = nn.ModuleList(UpBlock(a, b, n_classes) for a, b in zip(widths, widths[1:]))
        xavier_init(self, (nn.ConvTranspose2d, nn.Linear))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = self.stem(z.view(z.shape[0], -1)).view(-1, self.c0, 4, 4)
        for block in self.blocks:
            x = block(x, labels)
        return torch.tanh(x)


class ProjectionDiscriminator(nn.Module):
    def __init__(self, size: int = 64, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        mult = width_multipliers(size)[::-1]  # size/2 ... 4x4
        layers = [spectral_norm(nn.Conv2d(channels, base * mult[0], 4, 2, 1)), nn.LeakyReLU(0.2)]
        for a, b in zip(mult, mult[1:]):
            layers += [spectral_norm(nn.Conv2d(base * a, base * b, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        width = base * mult[-1]
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, width))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))
        return self.linear(h).flatten() + (self.embed(labels) * h).sum(dim=1)
