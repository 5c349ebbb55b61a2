"""The recipes: one row each, holding everything that defines a recipe.

A row names its network family (``generative.networks.NETWORKS``), whether it is one class-conditional model or
one model per class, the settings every generative model has (length, EMA, the trained network's optimiser), and
the settings of its objective (``generative.objectives.OBJECTIVES``), nested: an ``Adversarial`` row for a GAN
(loss, augmentation, the discriminator's optimiser, ...), a ``Denoising`` row for a diffusion model (formulation,
sampler). A row carries only what its objective uses. train_dcgan fills every option the user leaves unset from
the row. Nothing else in the code looks at a recipe's name, so a new recipe is a new row here (plus a network module
when it needs new networks), as in stylegan2-ada's ``cfg_specs``. This module imports nothing heavy: the Makefile
reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Adversarial:
    """A GAN's settings (objective ``adversarial``)."""

    objective = "adversarial"
    options = ("lr_d", "g_steps", "loss", "augment", "ada_target", "ada_kimg", "r1_gamma", "lecam")  # train_dcgan's
    loss: str  # a row of generative.adversarial.LOSSES
    augment: str  # DiffAugment policy (generative.augment.POLICIES, comma-separated) or "none"
    lr_d: float  # the discriminator's learning rate
    g_steps: int  # generator steps per discriminator step
    ada_target: float | None = None  # adaptive augmentation (generative.augment.ada_augment) toward this r_t; None: off
    ada_kimg: float = 100  # how fast ADA's p may move: from 0 to 1 in this many thousand images
    r1_gamma: float = 0.0  # weight of the lazy R1 penalty on real images (every R1_INTERVAL steps); 0: off
    lecam: float = 0.0  # weight of the LeCam regulariser; 0: off


@dataclass(frozen=True)
class Denoising:
    """A diffusion model's settings (objective ``denoising``): its formulation (the training loss, the sampler's
    noise levels and default solver) and how often labels are dropped for classifier-free guidance."""

    objective = "denoising"
    options = ()  # none of its settings is a train_dcgan option
    formulation: str  # a row of generative.diffusion.FORMULATIONS: "edm" or "ddpm"
    p_uncond: float = 0.1  # share of training labels replaced by "no class" (classifier-free guidance)


@dataclass(frozen=True)
class Recipe:
    networks: str  # a family of generative.networks.NETWORKS
    conditional: bool  # True: one model learns every class (labels go into every network); False: one per --cls
    settings: Adversarial | Denoising  # the objective's own settings; its class names the objective
    ema_kimg: float  # half-life of the sampled network's moving average in thousands of images; 0: no EMA
    epochs: int  # default training length, unless kimg is set
    lr_g: float  # the learning rate of the network that generates (a GAN's generator, a diffusion model's denoiser)
    beta1: float  # Adam's betas, of every optimiser of the recipe
    beta2: float
    kimg: float | None = None  # default training length in thousands of real images shown (then epochs is unused)
    base: int = 64  # base filter count of the networks
    # a conditional model's training order: False draws every image once per epoch (classes as often as the data
    # has them); True draws each class equally often (with replacement), so a small class trains as much as a large
    balance: bool = False

    @property
    def objective(self) -> str:
        return self.settings.objective


# The fields of a row that are also train_dcgan options: left unset on the command line, they take the row's value.
# (The training length, epochs or kimg, is resolved on its own: see GanConfig.resolved.) The objective's settings
# that are options are those its settings class names in ``options``.
DEFAULTS = ("lr_g", "beta1", "beta2", "ema_kimg", "base", "balance")
R1_INTERVAL = 16  # lazy regularisation (StyleGAN2): the R1 term every 16 discriminator steps, scaled by 16

# For a few hundred images: the conditional networks with adaptive augmentation (ADA) instead of fixed
# DiffAugment, LeCam, a longer EMA and a length in images shown. In the ablation on NIH 64x64 at equal
# wall-clock (docs/benchmarks.md, "GAN ablation") these networks beat the residual ones (2.4x the images per
# second, and precision 0.82 / recall 0.26 for No Finding on both GAN seeds, where the residual networks
# collapsed on one seed); ADA, LeCam and R1 made no difference there that two seeds could resolve.
LIMITED = Recipe(networks="cgan", conditional=True, ema_kimg=5.0, epochs=20, lr_g=2e-4, beta1=0.0, beta2=0.99,
                 kimg=150, base=64,
                 settings=Adversarial(loss="hinge", augment="none", lr_d=2e-4, g_steps=1, ada_target=0.6,
                                      ada_kimg=100, lecam=0.3))

RECIPES: dict[str, Recipe] = {
    # The reference study, faithfully: DCGAN, BCE, Adam 2e-4 / 1e-4, betas (0.5, 0.999), G stepped twice per D step.
    "study-dcgan": Recipe(networks="dcgan", conditional=False, ema_kimg=0.0, epochs=20, lr_g=2e-4, beta1=0.5,
                          beta2=0.999, settings=Adversarial(loss="bce", augment="none", lr_d=1e-4, g_steps=2)),
    # One class-conditional model, spectral norm + projection D, hinge loss, DiffAugment, EMA generator.
    # Learning rates: the best of four (lr_G, lr_D) pairs on NIH 64x64 at equal wall-clock
    # (bench/experiments/improved_lr.py).
    "improved": Recipe(networks="cgan", conditional=True, ema_kimg=1.0, epochs=20, lr_g=4e-4, beta1=0.0, beta2=0.99,
                       settings=Adversarial(loss="hinge", augment="translation,cutout,brightness,contrast", lr_d=4e-4,
                                            g_steps=1)),
    "limited": LIMITED,  # for a few hundred images (above)
    # `make all`'s GAN on the shipped data (a laptop, 2 CPU cores): `limited` with half the filters. It trains 3.5x
    # the images per second there, and at equal minutes it beat base 64 on both classes (docs/benchmarks.md,
    # "Generator training throughput on the CPU" and "Quality per CPU-minute"); its length fits the 15-minute run.
    "laptop": replace(LIMITED, base=32, kimg=50),
    # Not a GAN: a class-conditional denoising diffusion model (generative.unet's U-Net in EDM's preconditioning,
    # classifier-free guidance, sampled with EDM's deterministic Heun sampler) trained by the same loop, so it has
    # the same checkpoints, resume, snapshots and samples. lr_g is the denoiser's learning rate.
    "diffusion": Recipe(networks="edm", conditional=True, ema_kimg=2.0, epochs=20, lr_g=2e-4, beta1=0.9,
                        beta2=0.999, kimg=100, base=16,
                        settings=Denoising(formulation="edm")),
    # The same U-Net and settings as a DDPM (epsilon-prediction, uniform timesteps), sampled by DDIM: the comparison
    # that chose EDM for `diffusion` (docs/benchmarks.md); --steps is DDIM's number of network calls. Its grids take
    # 19 steps: as many network calls as EDM's 10 Heun steps.
    "diffusion-ddpm": Recipe(networks="ddpm", conditional=True, ema_kimg=2.0, epochs=20, lr_g=2e-4, beta1=0.9,
                             beta2=0.999, kimg=100, base=16,
                             settings=Denoising(formulation="ddpm")),
}

# Names recipes had before, still accepted everywhere a recipe is named (and in checkpoints that record them).
ALIASES = {"seed": "study-dcgan"}

# The recipe train_dcgan and `make` use when none is named (the Makefile reads it from make_table; README says it).
DEFAULT_RECIPE = "limited"
# The recipe of `make all` on the default data (DATA=nih-mini, sized for a 2-core CPU): the Makefile reads it from
# make_table too.
LAPTOP_RECIPE = "laptop"

assert set(DEFAULTS) < {f.name for f in fields(Recipe)} and {DEFAULT_RECIPE, LAPTOP_RECIPE} <= set(RECIPES)


def objective_options() -> dict[str, tuple[str, ...]]:
    """Objective -> the train_dcgan options its settings hold, over the objectives the table's recipes use."""
    return {type(r.settings).objective: type(r.settings).options for r in RECIPES.values()}


def canonical(name):
    """The recipe a name means (an alias's new name; anything else unchanged)."""
    return ALIASES.get(name, name) if isinstance(name, str) else name


def make_table() -> str:
    """For the Makefile: ``name:conditional`` or ``name:per-class`` for every recipe and alias, space-separated; the
    default recipe's entry ends in ``:default``, the laptop run's in ``:laptop``."""
    names = list(RECIPES) + [alias for alias, name in ALIASES.items() if name in RECIPES]
    return " ".join(f"{name}:{'conditional' if RECIPES[canonical(name)].conditional else 'per-class'}"
                    f"{':default' * (name == DEFAULT_RECIPE)}{':laptop' * (name == LAPTOP_RECIPE)}" for name in names)
