"""Building a generative model's networks from a description; the sampled network's moving average; images.

``NETWORKS`` maps a network family (a recipe's ``networks``, a checkpoint's ``model["kind"]``) to its parts, in the
order they are built: a GAN family has a ``generator`` and a ``discriminator``, a diffusion family one ``denoiser``.
Every part's class takes ``(size, [latent,] base, channels, n_classes)`` (``latent``: generators only) and its
``forward`` takes the class labels (networks that are not conditional ignore them). A new family is one row here
and its module; which parts an objective trains is ``generative.objectives``' business.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.reader import to_uint8
from ..errors import UserError
from .cgan import ConditionalGenerator, ProjectionDiscriminator
from .dcgan import Discriminator, Generator, check_size
from .unet import Denoiser, EpsDenoiser

NETWORKS: dict[str, dict[str, type]] = {
    "dcgan": {"generator": Generator, "discriminator": Discriminator},  # the reference study's
    "cgan": {"generator": ConditionalGenerator, "discriminator": ProjectionDiscriminator},
    "edm": {"denoiser": Denoiser},  # a U-Net in EDM's preconditioning
    "ddpm": {"denoiser": EpsDenoiser},  # the same U-Net predicting DDPM's noise
}


def model_description(networks: str, size: int, latent: int, base: int, channels: int, classes: list[str],
                      cls: int | None, **objective: str) -> dict:
    """What a checkpoint records to rebuild its networks (docs/dataset-format.md, ``model``); ``objective`` adds
    what the objective needs to sample them (e.g. a diffusion model's ``formulation``)."""
    return {"kind": networks, "size": size, "latent": latent, "base": base, "channels": channels,
            "n_classes": len(classes), "classes": classes, "cls": cls, **objective}


def build(model: dict) -> dict[str, torch.nn.Module]:
    """The networks of a ``model_description``, part name -> module, built in the family's order (so a seed gives
    the same weights every time)."""
    family = NETWORKS.get(model["kind"])
    if family is None:
        raise UserError(f"unknown network family {model['kind']!r} (known: {', '.join(NETWORKS)})")
    check_size(model["size"])
    common = (model["base"], model["channels"], model["n_classes"])
    return {part: cls(model["size"], *((model["latent"],) if part == "generator" else ()), *common)
            for part, cls in family.items()}


def classes_generated(model: dict) -> list[int]:
    """The classes a checkpoint's model makes: the one it was trained on (``cls``), or every class."""
    return list(range(model["n_classes"])) if model.get("cls") is None else [model["cls"]]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def ema_beta(ema_kimg: float, nimg: int, batch: int) -> float:
    """Decay per step for a half-life of ``ema_kimg`` thousand images, ramped up early on (a short memory while
    the model changes fast: at most 5% of the images shown so far)."""
    ema_nimg = min(ema_kimg * 1000, nimg * 0.05)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


Sampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (latents, labels) on the device -> images in [-1, 1]


@torch.no_grad()
def generate(network: torch.nn.Module, sampler: Sampler, z: torch.Tensor, y: torch.Tensor, device,
             batch: int = 256) -> np.ndarray:
    """uint8 (n, H, W) images from latents and class labels, ``sampler`` running ``network`` (in eval mode while it
    runs); 3-channel output is averaged to gray."""
    was_training = network.training
    network.eval()
    out = []
    for i in range(0, len(z), batch):
        x = sampler(z[i:i + batch].to(device), y[i:i + batch].to(device)).float()
        out.append(to_uint8(x.mean(dim=1, keepdim=True)))
    network.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.uint8)
