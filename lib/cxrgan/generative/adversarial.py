"""The adversarial objective (GANs): a generator and a discriminator, their losses and regularisers, one training
step, and what a GAN adds to metric snapshots (the discriminator's view of real and generated images).

``LOSSES`` maps a loss name (a recipe's ``Adversarial.loss``) to its discriminator and generator terms; a new loss
is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data.reader import to_model_input
from ..errors import UserError
from .augment import AdaptiveP, ada_augment, diff_augment, parse_policy
from .recipes import R1_INTERVAL

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


LOSSES: dict[str, Loss] = {"bce": Loss(bce_d, bce_g), "hinge": Loss(hinge_d, hinge_g)}


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
# One training step


class AdversarialStep:
    """One discriminator step then ``g_steps`` generator steps, for the recipe's loss and augmentation. ``trained``
    holds the networks as trained (wrapped for several processes), ``modules`` the plain ones."""

    def __init__(self, cfg, rt, modules: dict, trained: dict, optimizers: dict, per_rank: int,
                 state: dict | None = None):
        if cfg.r1_gamma > 0 and rt.world > 1:
            raise UserError("--r1-gamma is not supported with several processes yet (DistributedDataParallel has no "
                            "double backward); train in one process or use --r1-gamma 0")
        self.cfg, self.rt, self.per_rank = cfg, rt, per_rank
        self.G, self.D, self.D_plain = trained["generator"], trained["discriminator"], modules["discriminator"]
        self.opt_g, self.opt_d = optimizers["generator"], optimizers["discriminator"]
        self.loss = LOSSES[cfg.loss]
        self.policy = parse_policy(cfg.augment)
        self.ada = AdaptiveP(cfg.ada_target, cfg.ada_kimg, cfg.batch) if cfg.ada_target is not None else None
        self.lecam = LeCam() if cfg.lecam > 0 else None
        state = state or {}
        if self.ada is not None and state.get("ada") is not None:
            self.ada.load_state_dict(state["ada"])  # resumed: continue p where the checkpoint left it
        if self.lecam is not None and state.get("lecam") is not None:
            self.lecam.load_state_dict(state["lecam"])

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the step (``objective_state``)."""
        return {"ada": self.ada.state_dict() if self.ada is not None else None,
                "lecam": self.lecam.state_dict() if self.lecam is not None else None}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The recipe's DiffAugment policy, then ADA's transforms with the current p (same for real and fake)."""
        if self.policy:
            x = diff_augment(x, self.policy)
        return ada_augment(x, self.ada.p) if self.ada is not None else x

    def __call__(self, real: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        """Update the networks on one batch (``step``: discriminator steps so far); returns the losses.csv values,
        averaged over processes."""
        out_real, out_fake, loss_d = self._discriminator_step(real, y, step)
        cfg, rt, n = self.cfg, self.rt, self.per_rank
        # generator step(s); D is frozen and called without its DDP wrapper (its gradients are not needed)
        self.D_plain.requires_grad_(False)
        for _ in range(cfg.g_steps):
            with rt.autocast():
                fake = self.G(torch.randn(n, cfg.latent, device=rt.device), y)
                loss_g = self.loss.generator(self.D_plain(self.augment(fake), y).float())
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        self.D_plain.requires_grad_(True)
        values = torch.stack([loss_d.detach(), loss_g.detach(), out_real.detach().mean(), out_fake.detach().mean()])
        if rt.world > 1:
            dist.all_reduce(values)
            values /= rt.world
        loss_d, loss_g, d_real, d_fake = values.tolist()
        return {"loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake,
                "augment_p": "" if self.ada is None else round(self.ada.p, 6)}

    def _discriminator_step(self, real: torch.Tensor, y: torch.Tensor, step: int):
        """Real and generated images in separate passes (separate batch-norm statistics); then ADA's heuristic."""
        cfg, rt, G, D = self.cfg, self.rt, self.G, self.D
        with torch.no_grad(), rt.autocast():
            fake = G(torch.randn(self.per_rank, cfg.latent, device=rt.device), y)
        r1_step = cfg.r1_gamma > 0 and step % R1_INTERVAL == 0
        real_in = self.augment(real)
        if r1_step:
            real_in = real_in.detach().requires_grad_(True)
        with rt.autocast():
            out_real = D(real_in, y).float()
            out_fake = D(self.augment(fake.detach()), y).float()
            loss_d = self.loss.discriminator(out_real, out_fake)
            if self.lecam is not None:
                loss_d = loss_d + cfg.lecam * self.lecam(out_real, out_fake)
            if r1_step:  # lazy: every R1_INTERVAL steps, scaled by the interval
                loss_d = loss_d + cfg.r1_gamma / 2 * r1_penalty(out_real, real_in) * R1_INTERVAL
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        if self.ada is not None:  # ADA's overfitting heuristic, over every process's real images
            signs = torch.stack([torch.sign(out_real.detach()).sum(), torch.tensor(float(out_real.numel()),
                                                                                   device=out_real.device)])
            if rt.world > 1:
                dist.all_reduce(signs)
            self.ada.observe(*signs.tolist())
        return out_real, out_fake, loss_d


# ----------------------------------------------------------------------------------------------------------------
# The objective, as generative.objectives lists it


class AdversarialObjective:
    name = "adversarial"
    sampled = "generator"  # the part that makes images (its EMA, when the recipe keeps one, is what is sampled)
    loss_columns = ("loss_d", "loss_g", "d_real", "d_fake", "img_per_s", "seconds", "augment_p")
    snapshot_columns = ("d_train", "d_val", "d_fake", "rt_train", "rt_val")
    sample_options = ("truncation",)  # sample.py's options that act on a GAN: the latents only

    def latent(self, cfg, size: int) -> int:
        return cfg.latent

    def model_extras(self, settings) -> dict:
        return {}

    def optimizers(self, cfg, modules: dict) -> dict[str, torch.optim.Optimizer]:
        rates = self.learning_rates(cfg)
        return {part: torch.optim.Adam(modules[part].parameters(), lr=rates[part], betas=(cfg.beta1, cfg.beta2))
                for part in ("generator", "discriminator")}

    def learning_rates(self, cfg) -> dict[str, float]:
        return {"generator": cfg.lr_g, "discriminator": cfg.lr_d}

    def step(self, cfg, rt, modules: dict, trained: dict, optimizers: dict, per_rank: int, state: dict | None,
             model: dict, settings):
        return AdversarialStep(cfg, rt, modules, trained, optimizers, per_rank, state)

    def sampler(self, network: torch.nn.Module, model: dict, steps: int | None = None, guidance: float = 1.0,
                solver: str | None = None, channels_last: bool = False):
        """(z, labels) -> images: the generator itself (a GAN has no sampler settings)."""
        return lambda z, y: network(z, y)

    def sampler_record(self, network, model: dict, steps: int | None, guidance: float, solver: str | None):
        """What a samples file records of how it was sampled: nothing, for a GAN."""
        return None

    def snapshot(self, snapshots, modules: dict, fake: np.ndarray, channels: int) -> dict:
        """The discriminator's view, without augmentation: mean logit on training images it trained on, on
        validation images it never saw and on generated ones, and the share of positive logits on the real ones."""
        D = modules["discriminator"]
        d_train = _logits(D, snapshots.d_train_images, snapshots.d_train_labels, channels, snapshots)
        d_val = _logits(D, snapshots.d_val_images, snapshots.d_val_labels, channels, snapshots)
        n = snapshots.d_images
        d_fake = _logits(D, torch.from_numpy(fake[:n]), snapshots.labels[:n], channels, snapshots)
        return {"d_train": float(d_train.mean()), "d_val": float(d_val.mean()), "d_fake": float(d_fake.mean()),
                "rt_train": float(np.sign(d_train).mean()), "rt_val": float(np.sign(d_val).mean())}


@torch.no_grad()
def _logits(D: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, channels: int, snapshots) -> np.ndarray:
    was_training = D.training
    D.eval()
    out = []
    for i in range(0, len(images), snapshots.batch):
        x = to_model_input(images[i:i + snapshots.batch].to(snapshots.device))
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        out.append(D(x, labels[i:i + snapshots.batch].to(snapshots.device)).float().cpu())
    D.train(was_training)
    return torch.cat(out).numpy()
