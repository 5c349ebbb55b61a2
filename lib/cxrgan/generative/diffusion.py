"""Diffusion models' training losses, noise levels and deterministic samplers, for the denoisers of
``generative.unet``: EDM (Karras et al. 2022: its weighted denoising loss, rho-spaced noise levels, Heun's
second-order sampler) and DDPM (Ho et al. 2020: epsilon loss at uniform timesteps of a 1,000-step linear-beta
schedule) sampled by deterministic DDIM, which is Euler's method on the same probability-flow ODE over DDPM's
timesteps. So the two formulations differ exactly in what the literature compares: the network's output mix, the
training noise levels and loss weighting, and the sampler. ``FORMULATIONS`` holds each one as a row.

Classifier-free guidance: training replaces a label by "no class" (``n_classes``) with probability ``p_uncond``;
sampling combines D(x; c) and D(x; none) as ``D_none + guidance * (D_c - D_none)``: guidance 1 is the plain
conditional model, 0 the unconditional one, above 1 sharper classes at some cost in diversity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .unet import SIGMA_DATA, Denoiser

P_MEAN, P_STD = -1.2, 1.2  # EDM's training noise levels: ln(sigma) ~ N(P_MEAN, P_STD^2)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # EDM's sampling noise schedule

DDPM_T, DDPM_BETAS = 1000, (1e-4, 0.02)  # DDPM's timesteps and linear beta schedule


def ddpm_sigmas(device=None) -> torch.Tensor:
    """sigma_t for DDPM's timesteps t = 0 .. T-1 (increasing), in EDM's terms."""
    betas = torch.linspace(*DDPM_BETAS, DDPM_T, dtype=torch.float64, device=device)
    alpha_bar = torch.cumprod(1 - betas, 0)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def _drop_labels(labels: torch.Tensor, n_classes: int, p_uncond: float, generator) -> torch.Tensor:
    drop = torch.rand(len(labels), device=labels.device, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(labels, n_classes), labels)


def edm_loss(denoise, images: torch.Tensor, labels: torch.Tensor, n_classes: int, p_uncond: float = 0.1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's weighted denoising loss on a batch, ``denoise(noisy, sigma, labels)`` being the preconditioned
    denoiser; labels are dropped to "no class" (``n_classes``) at rate ``p_uncond``."""
    n, device = len(images), images.device
    sigma = (torch.randn(n, device=device, generator=generator) * P_STD + P_MEAN).exp()
    weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
    noise = torch.randn(images.shape, device=device, generator=generator) * sigma.reshape(-1, 1, 1, 1)
    labels = _drop_labels(labels, n_classes, p_uncond, generator)
    denoised = denoise(images + noise, sigma, labels)
    return (weight.reshape(-1, 1, 1, 1) * (denoised.float() - images.float()) ** 2).mean()


def ddpm_loss(denoise, images: torch.Tensor, labels: torch.Tensor, n_classes: int, p_uncond: float = 0.1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM's simple loss, ||epsilon_hat - epsilon||^2 at a uniformly drawn timestep: in denoiser terms the squared
    error of D weighted by 1 / sigma^2; ``denoise`` is an EpsDenoiser (or what calls one)."""
    n, device = len(images), images.device
    t = torch.randint(0, DDPM_T, (n,), device=device, generator=generator)
    sigma = ddpm_sigmas(device)[t].float()
    noise = torch.randn(images.shape, device=device, generator=generator) * sigma.reshape(-1, 1, 1, 1)
    labels = _drop_labels(labels, n_classes, p_uncond, generator)
    denoised = denoise(images + noise, sigma, labels)
    return (((denoised.float() - images.float()) / sigma.reshape(-1, 1, 1, 1)) ** 2).mean()


def sigma_schedule(steps: int, device=None) -> torch.Tensor:
    """``steps`` noise levels from SIGMA_MAX down to SIGMA_MIN (EDM's rho-spaced schedule), then 0."""
    i = torch.arange(steps, dtype=torch.float64, device=device)
    if steps == 1:
        sigmas = torch.tensor([SIGMA_MAX], dtype=torch.float64, device=device)
    else:
        sigmas = (SIGMA_MAX ** (1 / RHO) + i / (steps - 1) * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64, device=device)])


def ddim_schedule(steps: int, device=None) -> torch.Tensor:
    """DDIM's noise levels: ``steps`` timesteps evenly spaced from T-1 down to 0, then 0."""
    t = torch.linspace(DDPM_T - 1, 0, steps, device=device).round().long()
    return torch.cat([ddpm_sigmas(device)[t], torch.zeros(1, dtype=torch.float64, device=device)])


# ODE solvers of the samplers below: name -> network calls per image for a number of steps. heun: EDM's second-order
# sampler (a correction on every step but the last); euler: first order (on DDPM's schedule this is DDIM);
# dpm++2m: DPM-Solver++(2M) (Lu et al. 2022), second order from the previous step's denoised image, so one call
# per step: about Heun's quality at half its calls.
SOLVERS = {"heun": lambda steps: 2 * steps - 1, "euler": lambda steps: steps, "dpm++2m": lambda steps: steps}


@torch.no_grad()
def heun_sample(denoiser: Denoiser, noise: torch.Tensor, labels: torch.Tensor, steps: int = 18,
                guidance: float = 1.0, solver: str = "heun") -> torch.Tensor:
    """EDM's deterministic sampler from standard normal ``noise`` (n, C, H, W) on EDM's noise schedule: the same
    noise and labels give the same images. Heun: 2 * steps - 1 denoiser evaluations (each a conditional and an
    unconditional one when guidance differs from 1); another ``solver`` of SOLVERS takes its own count."""
    return ode_sample(denoiser, noise, labels, sigma_schedule(steps, noise.device), solver, guidance)


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, noise: torch.Tensor, labels: torch.Tensor, steps: int = 50,
                guidance: float = 1.0, solver: str = "euler") -> torch.Tensor:
    """Deterministic DDIM (eta 0, the Euler solver) over ``steps`` of DDPM's timesteps: ``steps`` denoiser
    evaluations. As DDPM and DDIM sample, the predicted clean image is clipped to [-1, 1] at every step
    (epsilon-prediction's estimate of it is far outside the image range at high noise). (It starts at
    sigma_T * noise where DDPM starts at sqrt(1 + sigma_T^2) * noise: the same to 1 part in 10^4 at sigma_T 157.)"""
    return ode_sample(denoiser, noise, labels, ddim_schedule(steps, noise.device), solver, guidance, clip=True)


@torch.no_grad()
def ode_sample(denoiser: Denoiser, noise: torch.Tensor, labels: torch.Tensor, sigmas: torch.Tensor, solver: str,
               guidance: float, clip: bool = False) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``sigmas[0]`` to 0 (the last entry) with ``solver`` (SOLVERS);
    classifier-free ``guidance`` on every evaluation; with ``clip``, the denoised estimate clipped to the image
    range [-1, 1] before each step."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; one of {', '.join(SOLVERS)}")
    x = noise.to(torch.float64) * sigmas[0]

    def denoise(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.expand(len(x_t)).float()
        if guidance == 1.0:
            return denoiser(x_t.float(), s, labels).double()
        none = torch.full_like(labels, denoiser.n_classes)
        if guidance == 0.0:
            return denoiser(x_t.float(), s, none).double()
        both = denoiser(torch.cat([x_t, x_t]).float(), torch.cat([s, s]), torch.cat([labels, none])).double()
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    if clip:
        unclipped = denoise

        def denoise(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return unclipped(x_t, sigma).clamp(-1, 1)

    previous = None  # dpm++2m: the last step's denoised image and its noise level
    for i in range(len(sigmas) - 1):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, s_cur)
        if solver == "dpm++2m":
            x, previous = _dpm_solver_2m_step(x, denoised, s_cur, s_next, previous), (denoised, s_cur)
            continue
        d_cur = (x - denoised) / s_cur
        x_next = x + (s_next - s_cur) * d_cur
        if solver == "heun" and s_next > 0:  # Heun's correction, except on the last step to sigma 0
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s_cur) * (d_cur + d_next) / 2
        x = x_next
    return x.float().clamp(-1, 1)


def _dpm_solver_2m_step(x: torch.Tensor, denoised: torch.Tensor, s_cur: torch.Tensor, s_next: torch.Tensor,
                        previous: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """One DPM-Solver++(2M) step from noise level s_cur to s_next, in the log-noise variable lambda = -log(sigma).
    The first step (no ``previous``) and the last (to sigma 0, where it returns the denoised image) are first order
    (DDIM); the others extrapolate the denoised image linearly in lambda from the previous step's."""
    if s_next == 0:
        return denoised
    h = torch.log(s_cur) - torch.log(s_next)  # the step in lambda
    if previous is not None:
        old_denoised, s_prev = previous
        r = (torch.log(s_prev) - torch.log(s_cur)) / h  # the previous step's length relative to this one
        denoised = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised
    return (s_next / s_cur) * x + (1 - torch.exp(-h)) * denoised


@dataclass(frozen=True)
class Formulation:
    loss: Callable  # (denoise, images, labels, n_classes, p_uncond) -> the batch's loss
    schedule: Callable[[int, object], torch.Tensor]  # (steps, device) -> noise levels from high to 0
    solver: str  # the default ODE solver (SOLVERS)
    grid_steps: int  # sampler steps for training-time grids and metric snapshots
    clip: bool  # clip the denoised estimate to [-1, 1] at every step (DDPM and DDIM do)


FORMULATIONS = {
    "edm": Formulation(edm_loss, sigma_schedule, "heun", 10, clip=False),  # 19 network calls per grid image
    "ddpm": Formulation(ddpm_loss, ddim_schedule, "euler", 19, clip=True),  # the same 19 calls
}


@torch.no_grad()
def sample(formulation: str, denoiser: Denoiser, noise: torch.Tensor, labels: torch.Tensor, steps: int,
           guidance: float = 1.0, solver: str | None = None) -> torch.Tensor:
    """Images in [-1, 1] from standard normal ``noise`` (n, C, H, W) with the formulation's noise levels and its
    solver (or ``solver``); deterministic: the same noise and labels give the same images."""
    f = FORMULATIONS[formulation]
    return ode_sample(denoiser, noise, labels, f.schedule(steps, noise.device), solver or f.solver, guidance,
                      clip=f.clip)
