"""The reference study's DCGAN (Radford et al. 2016), for any power-of-two size from 32 to 512.

Generator: a 4x4 transposed convolution from the latent vector, then stride-2 transposed convolutions with batch
norm and ReLU, tanh out. Discriminator: stride-2 convolutions with LeakyReLU 0.2 (batch norm after the first),
down to 4x4, then one logit. Channel widths double towards the 4x4 end and are capped at 8x the base width, which
gives exactly the standard DCGAN at 64x64 and keeps the extra layers of 128-512 affordable.

Not conditional: one model learns one class (``n_classes`` and the labels passed to ``forward`` are ignored, so
both networks fit the interface of ``generative.networks.NETWORKS``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def width_multipliers(size: int) -> list[int]:
    """Width multiplier of each feature map from 4x4 up to size/2: min(size / (2r), 8) at resolution r."""
    check_size(size)
    return [min(size // (2 * r), 8) for r in (2**k for k in range(2, int(math.log2(size))))]


def check_size(size: int) -> None:
    if size < 32 or size > 512 or size & (size - 1):
        raise ValueError(f"image size must be a power of two from 32 to 512, got {size}")


def dcgan_init(m: nn.Module) -> None:
    """Weights N(0, 0.02), batch-norm gains N(1, 0.02), biases 0 (the DCGAN paper's initialisation)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, size: int = 64, latent: int = 100, base: int = 64, channels: int = 1, n_classes: int = 1):
        super().__init__()
        mult = width_multipliers(size)  # 4x4 ... size/2
        layers = [nn.ConvTranspose2d(latent, base * mult[0], 4, 1, 0, bias=False), nn.BatchNorm2d(base * mult[0]),
                  nn.ReLU(True)]
        for a, b in zip(mult, mult[1:]):
            layers += [nn.ConvTranspose2d(base * a, base * b, 4, 2, 1, bias=False), nn.BatchNorm2d(base * b),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(base * mult[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent = latent
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, size: int = 64, base: int = 64, channels: int = 1, n_classes: int = 1):
        super().__init__()
        mult = width_multipliers(size)[::-1]  # size/2 ... 4x4
        layers = [nn.Conv2d(channels, base * mult[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(mult, mult[1:]):
            layers += [nn.Conv2d(base * a, base * b, 4, 2, 1, bias=False), nn.BatchNorm2d(base * b),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(base * mult[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per image (the study's sigmoid lives in the BCE-with-logits loss)."""
        return self.net(x).flatten()
