"""The GAN recipes: one row each, holding everything that defines a recipe.

A row names its network family (``generative.models.NETWORKS``), whether it is one class-conditional model or one model
per class, its loss (``generative.models.LOSSES``), its augmentation policy, its generator EMA and its default
hyper-parameters; train_dcgan fills every option the user leaves unset from the row. Nothing else in the code
looks at a recipe's name, so a new recipe is a new row here (plus a network module when it needs new networks),
as in stylegan2-ada's ``cfg_specs``. This module imports nothing heavy: the Makefile reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Recipe:
    networks: str  # a family of generative.models.NETWORKS: which generator and discriminator
    conditional: bool  # True: one model learns every class (labels go into G and D); False: one model per --cls
    loss: str  # a row of generative.models.LOSSES
    augment: str  # DiffAugment policy (generative.augment.POLICIES, comma-separated) or "none"
    ema_kimg: float  # half-life of the generator's moving average in thousands of images; 0: no EMA
    epochs: int  # default training length, unless kimg is set
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    g_steps: int  # generator steps per discriminator step
    kimg: float | None = None  # default training length in thousands of real images shown (then epochs is unused)
    ada_target: float | None = None  # adaptive augmentation (generative.augment.ada_augment) toward this r_t; None: off
    ada_kimg: float = 100  # how fast ADA's p may move: from 0 to 1 in this many thousand images
    base: int = 64  # base filter count of both networks
    r1_gamma: float = 0.0  # weight of the lazy R1 penalty on real images (every R1_INTERVAL steps); 0: off
    lecam: float = 0.0  # weight of the LeCam regulariser; 0: off


# The fields of a row that are also train_dcgan options: left unset on the command line, they take the row's value.
# (The training length, epochs or kimg, is resolved on its own: see GanConfig.resolved.)
DEFAULTS = ("lr_g", "lr_d", "beta1", "beta2", "g_steps", "loss", "augment", "ema_kimg", "ada_target", "ada_kimg",
            "base", "r1_gamma", "lecam")
R1_INTERVAL = 16  # lazy regularisation (StyleGAN2): the R1 term every 16 discriminator steps, scaled by 16

RECIPES: dict[str, Recipe] = {
    # The reference study, faithfully: DCGAN, BCE, Adam 2e-4 / 1e-4, betas (0.5, 0.999), G stepped twice per D step.
    "seed": Recipe(networks="dcgan", conditional=False, loss="bce", augment="none", ema_kimg=0.0, epochs=20,
                   lr_g=2e-4, lr_d=1e-4, beta1=0.5, beta2=0.999, g_steps=2),
    # One class-conditional model, spectral norm + projection D, hinge loss, DiffAugment, EMA generator.
    # Learning rates: the best of four (lr_G, lr_D) pairs on NIH 64x64 at equal wall-clock
    # (bench/experiments/improved_lr.py).
    "improved": Recipe(networks="cgan", conditional=True, loss="hinge",
                       augment="translation,cutout,brightness,contrast", ema_kimg=1.0, epochs=20, lr_g=4e-4,
                       lr_d=4e-4, beta1=0.0, beta2=0.99, g_steps=1),
    # For a few hundred images: the conditional networks with adaptive augmentation (ADA) instead of fixed
    # DiffAugment, LeCam, a longer EMA and a length in images shown. In the ablation on NIH 64x64 at equal
    # wall-clock (docs/benchmarks.md, "GAN ablation") these networks beat the residual ones (2.4x the images per
    # second, and precision 0.82 / recall 0.26 for No Finding on both GAN seeds, where the residual networks
    # collapsed on one seed); ADA, LeCam and R1 made no difference there that two seeds could resolve.
    "limited": Recipe(networks="cgan", conditional=True, loss="hinge", augment="none", ema_kimg=5.0, epochs=20,
                      lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.99, g_steps=1, kimg=150, ada_target=0.6,
                      ada_kimg=100, base=64, lecam=0.3),
    # Not a GAN: a class-conditional denoising diffusion model (generative.edm: a compact U-Net in EDM's preconditioning,
    # classifier-free guidance, sampled with EDM's deterministic Heun sampler) trained by the same loop, so it has the
    # same checkpoints, resume, snapshots and samples. lr_g is the denoiser's learning rate; lr_d is unused.
    "diffusion": Recipe(networks="edm", conditional=True, loss="denoising", augment="none", ema_kimg=2.0,
                        epochs=20, lr_g=2e-4, lr_d=2e-4, beta1=0.9, beta2=0.999, g_steps=1, kimg=100, base=16),
    # The same U-Net and settings as a DDPM (epsilon-prediction, uniform timesteps), sampled by DDIM: the comparison
    # that chose EDM for `diffusion` (docs/benchmarks.md); --steps is DDIM's number of network calls.
    "diffusion-ddpm": Recipe(networks="ddpm", conditional=True, loss="denoising", augment="none", ema_kimg=2.0,
                             epochs=20, lr_g=2e-4, lr_d=2e-4, beta1=0.9, beta2=0.999, g_steps=1, kimg=100, base=16),
}

# The recipe train_dcgan and `make` use when none is named (the Makefile reads it from make_table; README says it).
DEFAULT_RECIPE = "limited"

assert set(DEFAULTS) < {f.name for f in fields(Recipe)} and DEFAULT_RECIPE in RECIPES


def make_table() -> str:
    """For the Makefile: ``name:conditional`` or ``name:per-class`` for every recipe, space-separated; the default
    recipe's entry ends in ``:default``."""
    return " ".join(f"{name}:{'conditional' if r.conditional else 'per-class'}{':default' * (name == DEFAULT_RECIPE)}"
                    for name, r in RECIPES.items())
