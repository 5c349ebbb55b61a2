"""The diffusion recipes' networks: a compact class-conditional U-Net, wrapped in EDM's preconditioning
(Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"), its training loss, and
its deterministic Heun sampler with classifier-free guidance; and the same U-Net as a DDPM (Ho et al. 2020:
epsilon-prediction, 1,000 linear-beta steps, uniform timesteps, the plain epsilon loss) sampled by DDIM.

Both are written in EDM's terms, as Karras et al. show they can be: a denoiser D(x; sigma) on x = image + sigma *
noise. DDPM's x_t at timestep t is sqrt(alpha_bar_t) * x with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), its
epsilon-prediction is the preconditioning c_skip = 1, c_out = -sigma, and deterministic DDIM is Euler's method on
the same ODE over DDPM's timesteps. So the two recipes differ exactly in what the literature compares: the
network's output mix, the training noise levels and loss weighting, and the sampler (second-order Heun on EDM's
rho-spaced levels against first-order DDIM on uniformly spaced timesteps). `diffusion` (EDM) is the default: it was
measured against `diffusion-ddpm` at equal training time and equal network calls (docs/benchmarks.md, "diffusion").

Class conditioning with classifier-free guidance: the label ``n_classes`` means "no class"; training replaces a
label by it with probability ``p_uncond``; sampling combines D(x; c) and D(x; none) as
``D_none + guidance * (D_c - D_none)``: guidance 1 is the plain conditional model, 0 the unconditional one, above 1
sharper classes at some cost in diversity.

``EDMGenerator(z, labels)`` turns standard normal latents (one per pixel: ``latent = size * size``) into images in
[-1, 1] by running the sampler, so sample.py and ``generative.models.generate`` use it like any GAN generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGMA_DATA = 0.5  # the images' standard deviation in [-1, 1] (chest X-rays: about 0.5)
P_MEAN, P_STD = -1.2, 1.2  # training noise levels: ln(sigma) ~ N(P_MEAN, P_STD^2)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # the sampler's noise schedule (EDM's defaults)


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
# EDM: preconditioning, loss, sampler


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


P_UNCOND = 0.1  # share of training labels replaced by "no class" (classifier-free guidance)
DDPM_T, DDPM_BETAS = 1000, (1e-4, 0.02)  # DDPM's timesteps and linear beta schedule


def ddpm_sigmas(device=None) -> torch.Tensor:
    """sigma_t for DDPM's timesteps t = 0 .. T-1 (increasing), in EDM's terms."""
    betas = torch.linspace(*DDPM_BETAS, DDPM_T, dtype=torch.float64, device=device)
    alpha_bar = torch.cumprod(1 - betas, 0)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def _drop_labels(labels: torch.Tensor, n_classes: int, p_uncond: float, generator) -> torch.Tensor:
    drop = torch.rand(len(labels), device=labels.device, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(labels, n_classes), labels)


def edm_loss(denoise, images: torch.Tensor, labels: torch.Tensor, n_classes: int, p_uncond: float = P_UNCOND,
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


def ddpm_loss(denoise, images: torch.Tensor, labels: torch.Tensor, n_classes: int, p_uncond: float = P_UNCOND,
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


class EDMGenerator(nn.Module):
    """The sampler as a generator: ``forward(z, labels)`` with z (n, size * size * channels) standard normal gives
    images (n, channels, size, size) in [-1, 1]. ``steps`` and ``guidance`` are set by whoever samples (sample.py's
    --steps and --guidance); the weights are the denoiser's (``net.*``)."""

    denoiser_class, sampler, training_loss = Denoiser, staticmethod(heun_sample), staticmethod(edm_loss)
    default_solver = "heun"
    grid_steps = 10  # for training-time grids and snapshots (19 network calls); sample.py sets its own

    def __init__(self, size: int, latent: int, base: int = 64, channels: int = 1, n_classes: int = 2):
        super().__init__()
        if latent != size * size * channels:
            raise ValueError(f"the diffusion recipe's latent is one value per pixel ({size * size * channels}), "
                             f"not {latent}")
        self.size, self.channels = size, channels
        self.denoiser = self.denoiser_class(size, base, channels, n_classes)
        self.steps, self.guidance, self.solver = self.grid_steps, 1.0, self.default_solver
        self.channels_last = False

    def for_sampling(self, steps: int, guidance: float, cpu: bool, solver: str | None = None) -> None:
        """Sampler settings for sample.py (``solver`` None: the recipe's own); on the CPU also the channels-last
        layout, which makes the U-Net's convolutions about 1.5x faster there at inference (not in training, where
        it does not help: this copy only samples)."""
        self.steps, self.guidance, self.solver = steps, float(guidance), solver or self.default_solver
        if cpu:
            self.to(memory_format=torch.channels_last)
            self.channels_last = True

    def forward(self, z: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Images from latents; with ``sigma``, instead the denoiser on noisy images ``z`` (n, C, H, W) (what
        training calls, through DistributedDataParallel when there are several processes)."""
        if sigma is not None:
            return self.denoiser(z, sigma, labels)
        noise = z.reshape(len(z), self.channels, self.size, self.size)
        if self.channels_last:
            noise = noise.contiguous(memory_format=torch.channels_last)
        return self.sampler(self.denoiser, noise, labels, self.steps, self.guidance, self.solver)


class DDPMGenerator(EDMGenerator):
    """The same U-Net as a DDPM (epsilon-prediction, trained on DDPM's loss), sampled by DDIM: ``steps`` network
    calls per image (EDM's Heun sampler makes 2 * steps - 1)."""

    denoiser_class, sampler, training_loss = EpsDenoiser, staticmethod(ddim_sample), staticmethod(ddpm_loss)
    default_solver = "euler"
    grid_steps = 19  # the same network calls as EDM's grids


class NoDiscriminator(nn.Module):
    """The diffusion recipe has no discriminator; this keeps ``build_models``' (generator, discriminator) shape.
    It has no weights and scores every image 0; metric snapshots leave their discriminator columns empty for it."""

    def __init__(self, size: int, base: int, channels: int, n_classes: int):
        super().__init__()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), device=x.device)
