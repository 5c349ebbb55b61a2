"""train_dcgan's (and train_diffusion's) options, written once: each field's help is its metadata, and the
recipes' defaults in the help come from the recipe table, so ``--help`` cannot drift from the code
(tools/train_dcgan.py's signature and help are built from this class)."""

from __future__ import annotations

import copy
import math
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import options
from ..errors import UserError
from ..fileio import check_writable
from ..metrics.networks import argument_file
from ..runtime import PRECISIONS
from .adversarial import LOSSES
from .augment import parse_policy
from .recipes import ALIASES, DEFAULT_RECIPE, DEFAULTS, RECIPES, Recipe, canonical, objective_options


def option(default, help: str):
    return field(default=default, metadata={"help": help})


def required(help: str):
    return field(metadata={"help": help})


@dataclass
class GanConfig:
    data: str = required("dataset file (tools/make_hdf5.py or tools/make_phantoms.py); its train split is used.")
    out: str = option("outputs/gan", "folder for checkpoints and figures (default outputs/gan).")
    recipe: str = option(DEFAULT_RECIPE, "RECIPES (lib/cxrgan/generative/recipes.py).")
    cls: int | None = option(None, "with a per-class recipe (PER_CLASS), the class this model learns (0 No Finding, "
                                   "1 Infiltration).")
    real_fraction: float = option(1.0, "train on a patient-level fraction of the train split (the low-data regime; "
                                       "the same patients as train_resnet --real-fraction with the same "
                                       "--subset-seed, so a model per fraction sees only that fraction's images).")
    subset_seed: int = option(0, "which patients --real-fraction keeps.")
    epochs: int | None = option(None, "epochs in total, counting resumed ones (or give --kimg; default: the "
                                      "recipe's length).")
    batch: int = option(32, "global batch size (default 32).")
    seed: int = option(0, "seed of weights, data order, noise and augmentation.")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N.")
    resume: bool = option(True, "continue from the newest checkpoint in OUT that loads (last.pt, or a newer "
                                "ckpt-EEEEEE.pt left by a run killed between the two writes) if there is one "
                                "(default); --noresume starts over.")
    overwrite: bool = option(False, "allow starting over in an OUT that holds an earlier run, deleting its "
                                    "checkpoints and history (without it such a run is refused, so nothing is lost "
                                    "by accident).")
    channels: int = option(1, "1 (gray, default) or 3 (gray replicated to RGB, as in the study).")
    latent: int = option(100, "a GAN's latent dimension (default 100; a diffusion model's is one value per pixel).")
    base: int | None = option(None, "base filter count of the networks.")
    lr_g: float | None = option(None, "learning rate of the network that generates (a GAN's generator, a diffusion "
                                      "model's denoiser).")
    lr_d: float | None = option(None, "a GAN's discriminator learning rate.")
    beta1: float | None = option(None, "Adam beta1.")
    beta2: float | None = option(None, "Adam beta2.")
    g_steps: int | None = option(None, "a GAN's generator steps per discriminator step.")
    loss: str | None = option(None, f"a GAN's loss: {' or '.join(LOSSES)}.")
    augment: str | None = option(None, "a GAN's DiffAugment policy, comma-separated from translation,cutout,"
                                       "brightness,contrast, or none.")
    balance: bool | None = option(None, "a class-conditional model's epochs draw each class equally often (with "
                                        "replacement) instead of every image once; --nobalance turns it off.")
    ema_kimg: float | None = option(None, "half-life of the EMA of the network that generates, in thousands of "
                                          "images (sampled from); 0 disables.")
    ckpt_every: int = option(1, "write ckpt-EEEEEE.pt, the grid and losses.png every this many epochs (last.pt "
                                "is written every epoch); raise it for long runs on small datasets, where an epoch "
                                "takes seconds.")
    keep: int = option(3, "how many ckpt-EEEEEE.pt to keep (default 3).")
    grid: int = option(16, "fixed-noise images per class in each grid PNG (default 16).")
    compile: bool = option(False, "torch.compile the networks (CUDA).")
    precision: str = option("auto", "auto: bf16 autocast on CUDA, float32 on the CPU; bf16: bf16 autocast on the "
                                    "CPU too, 1.4-1.5x faster training on CPUs with AMX or AVX512-BF16 (not measured "
                                    "on CPUs without, where bf16 is emulated; docs/benchmarks.md, \"Generator "
                                    "training throughput on the CPU\"); fp32: no autocast.")
    kimg: float | None = option(None, "training length in thousands of real images shown, counting resumed ones, "
                                      "instead of --epochs (rounded up to whole epochs; a 300-image dataset then "
                                      "gets the thousands of steps a GAN needs).")
    snapshot_kimg: float = option(0, "every this many kimg (and at the end), sample --snapshot-n images and append "
                                     "KID, precision, recall, pixel diversity against the validation split (and, "
                                     "for a GAN, the discriminator's view of training, validation and generated "
                                     "images) to OUT/metrics.csv (plotted in metrics.png); 0 (default) disables.")
    snapshot_n: int = option(500, "generated images per snapshot, with the validation split's class mix (default "
                                  "500).")
    snapshot_features: str | None = option(None, "cxr:PATH (make features: a chest X-ray feature network), "
                                                 "classifier:CKPT (a train_resnet model) or inception, for the KID "
                                                 "and precision/recall columns; default none (pixel columns only).")
    select_snapshot: bool = option(False, "keep the snapshot with the lowest validation KID as OUT/best.pt, which "
                                          "sample.py prefers (needs --snapshot-kimg and --snapshot-features).")
    ada_target: float | None = option(None, "a GAN's adaptive discriminator augmentation: tune the probability p "
                                            "of each transform (translation, scale, rotation, brightness, contrast, "
                                            "cutout; never flips) so that the share of real images D scores "
                                            "positive stays near this (ADA: 0.6); p is logged as augment_p in "
                                            "losses.csv; 0 turns it off.")
    ada_kimg: float | None = option(None, "ADA's p can move from 0 to 1 within this many thousand images.")
    r1_gamma: float | None = option(None, "weight of a GAN's R1 gradient penalty on real images, applied every 16 "
                                          "D steps (0: off).")
    lecam: float | None = option(None, "weight of a GAN's LeCam regulariser (0: off).")

    def resolved(self) -> "GanConfig":
        """Fill the recipe's defaults and validate. Raises UserError. The length is then ``epochs``, or ``kimg``
        (converted to epochs once the training split's size is known)."""
        cfg = copy.copy(self)
        cfg.recipe = canonical(cfg.recipe)
        options.one_of(cfg, "recipe", RECIPES, ", ".join([*RECIPES, *ALIASES]))
        recipe = RECIPES[cfg.recipe]
        _fill_from_recipe(cfg, recipe)
        _check_common(cfg, recipe)
        if recipe.objective == "adversarial":
            _check_adversarial(cfg)
        options.seed(cfg, "seed", "subset_seed")
        if Path(str(cfg.out)).is_file():
            raise UserError(f"--out {cfg.out} is a file; give a folder for the run")
        check_writable(cfg.out, "--out")
        return cfg

    def input_paths(self) -> dict:
        return {"--data": self.data, "--snapshot-features": argument_file(self.snapshot_features)}

    def output_paths(self) -> dict:
        return {"--out": self.out}


def _fill_from_recipe(cfg: GanConfig, recipe: Recipe) -> None:
    """Every option left unset takes the recipe's value; an option of another objective is refused."""
    for key in DEFAULTS:
        if getattr(cfg, key) is None:
            setattr(cfg, key, getattr(recipe, key))
    for objective, keys in objective_options().items():
        for key in keys:
            if objective == recipe.objective:
                if getattr(cfg, key) is None:
                    setattr(cfg, key, getattr(recipe.settings, key))
            elif getattr(cfg, key) is not None:
                raise UserError(f"{options.flag(key)} is an option of {objective} recipes; --recipe {cfg.recipe} "
                                f"trains on the {recipe.objective} objective: leave it out")
    if cfg.epochs is not None and cfg.kimg is not None:
        raise UserError("give --epochs or --kimg (the training length), not both")
    if cfg.epochs is None and cfg.kimg is None:  # the recipe's length: in kimg when it gives one
        cfg.epochs, cfg.kimg = (None, recipe.kimg) if recipe.kimg is not None else (recipe.epochs, None)


def _number_at_least(cfg: GanConfig, name: str, what: str) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < math.inf:
        raise UserError(f"{options.flag(name)} must be a number >= 0 ({what}), got {v!r}")


def _check_common(cfg: GanConfig, recipe: Recipe) -> None:
    if cfg.kimg is not None:
        options.positive_number(cfg, "kimg")
    options.optional_whole_number(cfg, "epochs")
    options.whole_number(cfg, "batch", "latent", "base", "ckpt_every", "grid", "snapshot_n")
    _number_at_least(cfg, "snapshot_kimg", "0: no snapshots")
    if cfg.select_snapshot and not (cfg.snapshot_kimg and cfg.snapshot_features):
        raise UserError("--select-snapshot picks the snapshot with the lowest validation KID: it needs "
                        "--snapshot-kimg N and --snapshot-features cxr:PATH (or classifier:CKPT, inception)")
    options.one_of(cfg, "channels", (1, 3), "1 (gray) or 3 (gray replicated, as in the study)")
    options.one_of(cfg, "precision", PRECISIONS, ", ".join(PRECISIONS))
    if not isinstance(cfg.balance, bool):
        raise UserError(f"--balance takes no value (or --nobalance), got {cfg.balance!r}")
    options.positive_number(cfg, "lr_g", maximum=1.0)  # beyond 1, Adam's steps overflow the weights
    for name in ("beta1", "beta2"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise UserError(f"{options.flag(name)} must be in [0, 1), got {v!r}")
    _number_at_least(cfg, "ema_kimg", "0: no EMA")
    if not recipe.conditional and cfg.cls is None:
        raise UserError(f"--recipe {cfg.recipe} trains one model per class: pass --cls 0 or --cls 1 (and a "
                        "separate --out)")
    if cfg.cls is not None and not options.is_whole(cfg.cls):
        raise UserError(f"--cls must be a class index such as 0 or 1, got {cfg.cls!r}")
    if not isinstance(cfg.real_fraction, (int, float)) or isinstance(cfg.real_fraction, bool) \
            or not 0 < cfg.real_fraction <= 1:
        raise UserError(f"--real-fraction must be in (0, 1], got {cfg.real_fraction!r}")


def _check_adversarial(cfg: GanConfig) -> None:
    options.whole_number(cfg, "g_steps")
    options.one_of(cfg, "loss", LOSSES, " or ".join(LOSSES))
    options.positive_number(cfg, "lr_d", maximum=1.0)
    options.positive_number(cfg, "ada_kimg")
    _number_at_least(cfg, "r1_gamma", "0: off")
    _number_at_least(cfg, "lecam", "0: off")
    if cfg.ada_target is not None and (not isinstance(cfg.ada_target, (int, float)) or isinstance(
            cfg.ada_target, bool) or not 0 <= cfg.ada_target < 1):
        raise UserError(f"--ada-target must be in [0, 1) (ADA uses 0.6; 0 turns it off), got {cfg.ada_target!r}")
    if cfg.ada_target == 0:
        cfg.ada_target = None
    try:
        cfg.augment = ",".join(parse_policy(cfg.augment)) or "none"
    except ValueError as e:
        raise UserError(f"--augment: {e}") from None


def _recipe_values(name: str) -> str:
    """`` (by recipe a 1, b 2)``: each recipe's value of an option it sets, from the table."""
    values = []
    for recipe_name, recipe in RECIPES.items():
        holder = recipe if name in DEFAULTS else recipe.settings
        if name in DEFAULTS or name in type(recipe.settings).options:
            v = getattr(holder, name)
            values.append(f"{recipe_name} {'off' if v is None else v}")
    return f" (by recipe {', '.join(values)})" if values else ""


def options_help() -> str:
    """The Args section of train_dcgan's and train_diffusion's help: every option's help (its field metadata),
    with the recipes' values of the options a recipe sets, from the table."""
    recipes = ", ".join(f"{name} (the default)" if name == DEFAULT_RECIPE else name for name in RECIPES)
    aliases = "; ".join(f"{old} is {new}'s old name" for old, new in ALIASES.items())
    per_class = ", ".join(name for name, r in RECIPES.items() if not r.conditional)
    lines = ["", "    Args:"]
    for f in fields(GanConfig):
        text = f.metadata["help"].replace("RECIPES", f"{recipes}; {aliases}" if aliases else recipes)
        text = text.replace("PER_CLASS", per_class)
        if f.name in DEFAULTS or any(f.name in keys for keys in objective_options().values()):
            text += _recipe_values(f.name)
        lines += _wrapped(f"{f.name}: {text}")
    return "\n".join(lines) + "\n    "


def _wrapped(text: str, width: int = 116) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=" " * 8, subsequent_indent=" " * 12, break_on_hyphens=False)
