"""Building GANs from a description, their losses, the generator's moving average, and generating images.

``NETWORKS`` maps a network family (a recipe's ``networks``, a checkpoint's ``model["kind"]``) to its generator
and discriminator classes; every class takes ``(size, ..., base, channels, n_classes)`` and its ``forward`` takes
the class labels (networks that are not conditional ignore them). ``LOSSES`` maps a loss name to its
discriminator and generator terms. A new family or loss is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.reader import to_uint8
from ..errors import UserError
from .cgan import ConditionalGenerator, ProjectionDiscriminator
from .dcgan import Discriminator, Generator, check_size
from .edm import DDPMGenerator, EDMGenerator, NoDiscriminator
from .resnet import ResidualDiscriminator, ResidualGenerator


@dataclass(frozen=True)
class NetworkFamily:
    generator: type  # (size, latent, base, channels, n_classes) -> nn.Module; forward(z, labels)
    discriminator: type  # (size, base, channels, n_classes) -> nn.Module; forward(x, labels) -> one logit per image


NETWORKS: dict[str, NetworkFamily] = {
    "dcgan": NetworkFamily(Generator, Discriminator),
    "cgan": NetworkFamily(ConditionalGenerator, ProjectionDiscriminator),
    "resnet": NetworkFamily(ResidualGenerator, ResidualDiscriminator),
    "edm": NetworkFamily(EDMGenerator, NoDiscriminator),  # the diffusion recipe: a denoiser, sampled by EDM's Heun
    "ddpm": NetworkFamily(DDPMGenerator, NoDiscriminator),  # the same U-Net as a DDPM, sampled by DDIM
}


def model_description(networks: str, size: int, latent: int, base: int, channels: int, classes: list[str],
                      cls: int | None) -> dict:
    """What a checkpoint records to rebuild its networks (docs/dataset-format.md, ``model``)."""
    return {"kind": networks, "size": size, "latent": latent, "base": base, "channels": channels,
            "n_classes": len(classes), "classes": classes, "cls": cls}


def build_models(model: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(generator, discriminator) from a ``model_description``."""
    family = NETWORKS.get(model["kind"])
    if family is None:
        raise UserError(f"unknown network family {model['kind']!r} (known: {', '.join(NETWORKS)})")
    check_size(model["size"])
    return (family.generator(model["size"], model["latent"], model["base"], model["channels"], model["n_classes"]),
            family.discriminator(model["size"], model["base"], model["channels"], model["n_classes"]))


def is_diffusion(networks: str) -> bool:
    """Whether a network family is a diffusion model (a denoiser sampled by an ODE solver, latent = its noise)."""
    return issubclass(NETWORKS[networks].generator, EDMGenerator)


def classes_generated(model: dict) -> list[int]:
    """The classes a checkpoint's generator makes: the one it was trained on (``cls``), or every class."""
    return list(range(model["n_classes"])) if model.get("cls") is None else [model["cls"]]


# ----------------------------------------------------------------------------------------------------------------
# Losses: discriminator outputs are logits, one per image


def bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The study: BCE(D(x), 1) + BCE(D(G(z)), 0)."""
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def bce_g(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating: BCE(D(G(z)), 1)."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


@dataclass(frozen=True)
class Loss:
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (D(real), D(fake)) -> loss
    generator: Callable[[torch.Tensor], torch.Tensor]  # D(fake) -> loss


def _no_adversary(*_):
    raise RuntimeError("the denoising objective has no discriminator or generator loss")


# "denoising": not an adversarial loss but the diffusion recipe's objective (EDM's weighted denoising loss,
# generative.edm.edm_loss); train_dcgan then takes a DenoisingStep instead of the adversarial Step.
LOSSES: dict[str, Loss] = {"bce": Loss(bce_d, bce_g), "hinge": Loss(hinge_d, hinge_g),
                           "denoising": Loss(_no_adversary, _no_adversary)}


# ----------------------------------------------------------------------------------------------------------------
# Regularisers of the discriminator


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the mean over images of the squared norm of D's gradient at real images. ``real``
    must have been the input of ``d_real`` with ``requires_grad``; the penalty itself is differentiable."""
    grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.square().sum(dim=tuple(range(1, grad.ndim))).mean()


class LeCam:
    """LeCam regularisation (Tseng et al. 2021): moving averages (decay 0.99) of D's mean output on real and on
    generated images, and the penalty E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], which keeps D's real
    and generated outputs from drifting apart as it starts to memorise a small training set."""

    def __init__(self, decay: float = 0.99):
        self.decay, self.real, self.fake = decay, 0.0, 0.0

    def __call__(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """Update the averages with this batch (as the reference code does, before the penalty), then the penalty."""
        self.real = self.decay * self.real + (1 - self.decay) * float(d_real.detach().mean())
        self.fake = self.decay * self.fake + (1 - self.decay) * float(d_fake.detach().mean())
        return F.relu(d_real - self.fake).square().mean() + F.relu(self.real - d_fake).square().mean()

    def state_dict(self) -> dict:
        return {"real": self.real, "fake": self.fake}

    def load_state_dict(self, state: dict) -> None:
        self.real, self.fake = state["real"], state["fake"]


# ----------------------------------------------------------------------------------------------------------------
# The generator's exponential moving average, and generating images


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def ema_beta(ema_kimg: float, nimg: int, batch: int) -> float:
    """Decay per step for a half-life of ``ema_kimg`` thousand images, ramped up early on (a short memory while
    the generator changes fast: at most 5% of the images shown so far)."""
    ema_nimg = min(ema_kimg * 1000, nimg * 0.05)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor, device, batch: int = 256) -> np.ndarray:
    """uint8 (n, H, W) images from latents and class labels (3-channel output is averaged to gray)."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(z), batch):
        x = G(z[i:i + batch].to(device), y[i:i + batch].to(device)).float()
        out.append(to_uint8(x.mean(dim=1, keepdim=True)))
    G.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.uint8)
