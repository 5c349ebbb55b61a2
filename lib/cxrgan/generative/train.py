"""train_dcgan: one plain training loop for every recipe in ``generative.recipes``.

Single process or data-parallel under ``torchrun`` (DistributedDataParallel; nccl on GPU, gloo on CPU; rank 0
alone writes). Sections, in the order a run goes through them: the configuration, the training images, the
networks and optimisers, resuming, one training step, and the end-of-epoch snapshot (losses, grid, checkpoint).
Every epoch ends with an atomic checkpoint holding everything needed to continue exactly: models, EMA,
optimisers, counters, all RNG states, the config and the dataset's identity.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import options, runtime, torchfile
from ..cli import ProgressFn, console, no_progress
from ..data.reader import H5ImageDataset, to_model_input
from ..data.splits import patient_fraction
from ..errors import UserError
from ..fileio import atomic_output, check_free_space, check_writable, write_json_atomic
from ..figures import plot_losses, save_grid
from . import checkpoint
from .augment import AdaptiveP, ada_augment, diff_augment, parse_policy
from .dcgan import check_size
from .models import (LOSSES, LeCam, build_models, ema_beta, ema_update, generate, is_diffusion, model_description,
                     r1_penalty)
from .recipes import DEFAULT_RECIPE, DEFAULTS, R1_INTERVAL, RECIPES
from .snapshots import Snapshots
from .snapshots import append as append_snapshot

SNAPSHOT_PLOT = ("kid", "recall", "pixel_diversity", "rt_train", "rt_val")

# The options' help, shared by tools/train_dcgan.py and tools/train_diffusion.py (their docstrings end with it).
OPTIONS_HELP = """
    Args:
        data: dataset file (tools/make_hdf5.py or tools/make_phantoms.py); its train split is used.
        out: folder for checkpoints and figures (default outputs/gan).
        recipe: RECIPE_LIST (lib/cxrgan/generative/recipes.py).
        cls: with --recipe seed, the class this model learns (0 No Finding, 1 Infiltration).
        real_fraction: train on a patient-level fraction of the train split (the low-data regime; the same
            patients as train_resnet --real-fraction with the same --subset-seed, so a GAN per fraction sees only
            that fraction's images).
        subset_seed: which patients --real-fraction keeps.
        epochs: epochs in total, counting resumed ones (recipe default 20; or give --kimg).
        batch: global batch size (default 32).
        seed: seed of weights, data order, noise and augmentation.
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        resume: continue from the newest checkpoint in OUT that loads (last.pt, or a newer ckpt-EEEEEE.pt left
            by a run killed between the two writes) if there is one (default); --noresume starts over.
        overwrite: allow starting over in an OUT that holds an earlier run, deleting its checkpoints and history
            (without it such a run is refused, so nothing is lost by accident).
        channels: 1 (gray, default) or 3 (gray replicated to RGB, as in the study).
        latent: latent dimension (default 100).
        base: base filter count of both networks (the recipe's: BASE_LIST).
        lr_g: generator learning rate (seed 2e-4, improved 4e-4).
        lr_d: discriminator learning rate (seed 1e-4, improved 4e-4).
        beta1: Adam beta1 (seed 0.5, improved 0.0).
        beta2: Adam beta2 (seed 0.999, improved 0.99).
        g_steps: generator steps per discriminator step (seed 2, improved 1).
        loss: bce (seed) or hinge (improved).
        augment: DiffAugment policy, comma-separated from translation,cutout,brightness,contrast, or none.
        ema_kimg: half-life of the generator's EMA in thousands of images; 0 disables (seed 0, improved 1).
        ckpt_every: write ckpt-EEEEEE.pt, the grid and losses.png every this many epochs (last.pt is written
            every epoch); raise it for long runs on small datasets, where an epoch takes seconds.
        keep: how many ckpt-EEEEEE.pt to keep (default 3).
        grid: fixed-noise images per class in each grid PNG (default 16).
        compile: torch.compile the networks (CUDA).
        kimg: training length in thousands of real images shown to D, counting resumed ones, instead of --epochs
            (rounded up to whole epochs; a 300-image dataset then gets the thousands of steps a GAN needs).
        snapshot_kimg: every this many kimg (and at the end), sample --snapshot-n images and append KID, precision,
            recall, pixel diversity against the validation split and the discriminator's view of training,
            validation and generated images to OUT/metrics.csv (plotted in metrics.png); 0 (default) disables.
        snapshot_n: generated images per snapshot, with the validation split's class mix (default 500).
        snapshot_features: classifier:CKPT (a train_resnet model: chest X-ray features) or inception, for the KID
            and precision/recall columns; default none (pixel and discriminator columns only).
        select_snapshot: keep the snapshot with the lowest validation KID as OUT/best.pt, which sample.py prefers
            (needs --snapshot-kimg and --snapshot-features).
        ada_target: adaptive discriminator augmentation: tune the probability p of each transform (translation,
            scale, rotation, brightness, contrast, cutout; never flips) so that the share of real images D scores
            positive stays near this (ADA: 0.6); p is logged as augment_p in losses.csv; 0 turns it off
            (limited 0.6, others off).
        ada_kimg: p can move from 0 to 1 within this many thousand images (limited 100).
        r1_gamma: weight of the R1 gradient penalty on real images, applied every 16 D steps (default off).
        lecam: weight of the LeCam regulariser (limited 0.3, others off).
    """.replace("RECIPE_LIST", ", ".join(f"{name} (train_dcgan's default)" if name == DEFAULT_RECIPE else name
                                      for name in RECIPES)) \
    .replace("BASE_LIST", ", ".join(f"{name} {r.base}" for name, r in RECIPES.items()))  # from the recipe table

LOSS_COLUMNS = ["epoch", "step", "kimg", "loss_d", "loss_g", "d_real", "d_fake", "img_per_s", "seconds", "augment_p"]


# ----------------------------------------------------------------------------------------------------------------
# Configuration: train_dcgan's options, written once (tools/train_dcgan.py's signature is built from it)


@dataclass
class GanConfig:
    data: str
    out: str = "outputs/gan"
    recipe: str = DEFAULT_RECIPE
    cls: int | None = None  # the one class this model learns (required by per-class recipes)
    real_fraction: float = 1.0  # train on this patient-level fraction of the train split (data.splits)
    subset_seed: int = 0  # which patients --real-fraction keeps (as train_resnet's, so both see the same images)
    epochs: int | None = None  # None: the recipe's value (so are the other None options below)
    batch: int = 32
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    overwrite: bool = False  # allow starting over in a folder that holds an earlier run (deleting it)
    channels: int = 1
    latent: int = 100
    base: int | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    g_steps: int | None = None
    loss: str | None = None
    augment: str | None = None
    ema_kimg: float | None = None
    ckpt_every: int = 1
    keep: int = 3
    grid: int = 16  # fixed-noise images per class in each grid
    compile: bool = False
    kimg: float | None = None  # training length in thousands of real images shown (rounded up to whole epochs)
    snapshot_kimg: float = 0  # metric snapshots every this many kimg (0: none); see generative/snapshots.py
    snapshot_n: int = 500  # generated images per snapshot
    snapshot_features: str | None = None  # classifier:CKPT or inception; None: pixel and discriminator columns only
    select_snapshot: bool = False  # keep the snapshot with the lowest validation KID as best.pt
    ada_target: float | None = None  # adaptive augmentation's target r_t (0: off); None: the recipe's
    ada_kimg: float | None = None
    r1_gamma: float | None = None  # lazy R1 penalty weight (0: off)
    lecam: float | None = None  # LeCam regulariser weight (0: off)

    def resolved(self) -> "GanConfig":
        """Fill the recipe's defaults and validate. Raises UserError. The length is then ``epochs``, or ``kimg``
        (converted to epochs once the training split's size is known, in ``epochs_for``)."""
        options.one_of(self, "recipe", RECIPES)
        recipe = RECIPES[self.recipe]
        cfg = copy.copy(self)
        for key in DEFAULTS:
            if getattr(cfg, key) is None:
                setattr(cfg, key, getattr(recipe, key))
        if cfg.epochs is not None and cfg.kimg is not None:
            raise UserError("give --epochs or --kimg (the training length), not both")
        if cfg.epochs is None and cfg.kimg is None:  # the recipe's length: in kimg when it gives one
            cfg.epochs, cfg.kimg = (None, recipe.kimg) if recipe.kimg is not None else (recipe.epochs, None)
        if cfg.kimg is not None:
            options.positive_number(cfg, "kimg")
        options.optional_whole_number(cfg, "epochs")
        options.whole_number(cfg, "batch", "latent", "base", "ckpt_every", "g_steps", "grid", "snapshot_n")
        if not isinstance(cfg.snapshot_kimg, (int, float)) or isinstance(cfg.snapshot_kimg, bool) \
                or cfg.snapshot_kimg < 0:
            raise UserError(f"--snapshot-kimg must be a number >= 0 (0: no snapshots), got {cfg.snapshot_kimg!r}")
        if cfg.select_snapshot and not (cfg.snapshot_kimg and cfg.snapshot_features):
            raise UserError("--select-snapshot picks the snapshot with the lowest validation KID: it needs "
                            "--snapshot-kimg N and --snapshot-features classifier:CKPT (or inception)")
        options.one_of(cfg, "channels", (1, 3), "1 (gray) or 3 (gray replicated, as in the study)")
        options.one_of(cfg, "loss", LOSSES, " or ".join(LOSSES))
        options.positive_number(cfg, "lr_g", "lr_d", maximum=1.0)  # beyond 1, Adam's steps overflow the weights
        options.positive_number(cfg, "ada_kimg")
        for name in ("beta1", "beta2"):
            v = getattr(cfg, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
                raise UserError(f"{options.flag(name)} must be in [0, 1), got {v!r}")
        if not isinstance(cfg.ema_kimg, (int, float)) or isinstance(cfg.ema_kimg, bool) \
                or not 0 <= cfg.ema_kimg < math.inf:
            raise UserError(f"--ema-kimg must be a number >= 0 (0: no EMA), got {cfg.ema_kimg!r}")
        for name in ("r1_gamma", "lecam"):
            v = getattr(cfg, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise UserError(f"{options.flag(name)} must be a number >= 0 (0: off), got {v!r}")
        if cfg.ada_target is not None and (not isinstance(cfg.ada_target, (int, float)) or isinstance(
                cfg.ada_target, bool) or not 0 <= cfg.ada_target < 1):
            raise UserError(f"--ada-target must be in [0, 1) (ADA uses 0.6; 0 turns it off), got {cfg.ada_target!r}")
        if cfg.ada_target == 0:
            cfg.ada_target = None
        try:
            cfg.augment = ",".join(parse_policy(cfg.augment)) or "none"
        except ValueError as e:
            raise UserError(f"--augment: {e}") from None
        if not recipe.conditional and cfg.cls is None:
            raise UserError(f"--recipe {cfg.recipe} trains one model per class: pass --cls 0 or --cls 1 (and a "
                            "separate --out)")
        if cfg.cls is not None and not options.is_whole(cfg.cls):
            raise UserError(f"--cls must be a class index such as 0 or 1, got {cfg.cls!r}")
        if not isinstance(cfg.real_fraction, (int, float)) or isinstance(cfg.real_fraction, bool) \
                or not 0 < cfg.real_fraction <= 1:
            raise UserError(f"--real-fraction must be in (0, 1], got {cfg.real_fraction!r}")
        options.seed(cfg)
        if Path(str(cfg.out)).is_file():
            raise UserError(f"--out {cfg.out} is a file; give a folder for the run")
        check_writable(cfg.out, "--out")
        return cfg

    def input_paths(self) -> dict:
        features = str(self.snapshot_features or "")
        return {"--data": self.data,
                "--snapshot-features": features.partition(":")[2] if features.startswith("classifier:") else None}

    def output_paths(self) -> dict:
        return {"--out": self.out}


def train(cfg: GanConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Train to ``cfg.epochs`` epochs, resuming from ``out/last.pt`` when allowed. Returns a summary."""
    cfg = cfg.resolved()
    rt = runtime.setup(cfg.device, distributed=True)
    try:
        return _train(cfg, rt, call_args or {}, progress)
    finally:
        runtime.teardown(rt)


# ----------------------------------------------------------------------------------------------------------------
# Training images


@dataclass
class TrainingImages:
    images: torch.Tensor  # uint8 (n, H, W)
    labels: torch.Tensor  # int64 (n,)
    classes: list[str]
    identity: dict  # what checkpoints record of the data: path, size, classes, content_sha256, split, n_train


def load_training_images(cfg: GanConfig) -> TrainingImages:
    data = H5ImageDataset(cfg.data, "train", in_memory=True)
    try:
        check_size(data.size)
    except ValueError:
        raise UserError(f"GAN training needs a dataset whose size is a power of two from 32 to 512; {cfg.data} is "
                        f"{data.size}x{data.size} (rebuild it with tools/make_hdf5.py --size 64)") from None
    if cfg.cls is not None and not 0 <= cfg.cls < len(data.classes):
        raise UserError(f"--cls {cfg.cls}: {cfg.data} has classes 0..{len(data.classes) - 1} ({data.classes})")
    n_full = int((data.labels == cfg.cls).sum()) if cfg.cls is not None else len(data.labels)
    keep = patient_fraction(data.labels, data.patient_ids, cfg.real_fraction, cfg.subset_seed)
    images, labels = torch.from_numpy(data.images[keep]), torch.from_numpy(data.labels[keep])
    if cfg.cls is not None:
        keep = labels == cfg.cls
        images, labels = images[keep], labels[keep]
    counts = np.bincount(labels.numpy(), minlength=len(data.classes)).tolist()
    empty = [data.classes[c] for c in ([cfg.cls] if cfg.cls is not None else range(len(data.classes)))
             if counts[c] == 0]
    if empty:  # a generator would still "sample" these classes, from weights that never saw one
        raise UserError(f"{cfg.data}: no training images of class {', '.join(map(repr, empty))}"
                        f"{' in this --real-fraction' if cfg.real_fraction < 1 else ''}; rebuild the dataset with "
                        "images of every class, or train per class on the ones it has (--cls)")
    if len(images) < cfg.batch and cfg.real_fraction >= 1:
        raise UserError(f"{len(images)} training images (class {cfg.cls if cfg.cls is not None else 'all'}) is fewer "
                        f"than --batch {cfg.batch}; lower --batch")
    identity = {"path": str(Path(cfg.data).resolve()), "size": data.size, "classes": data.classes,
                "content_sha256": data.info.attrs.get("content_sha256", ""), "split": "train",
                "real_fraction": float(cfg.real_fraction), "subset_seed": int(cfg.subset_seed), "n_train": len(images),
                "n_full_split": n_full, "class_counts": counts}
    return TrainingImages(images, labels, data.classes, identity)


# ----------------------------------------------------------------------------------------------------------------
# Networks, optimisers and the state that goes into checkpoints


@dataclass
class Networks:
    G: torch.nn.Module
    D: torch.nn.Module
    ema: torch.nn.Module | None  # the generator's moving average (sampled from), None without EMA
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None  # None: no discriminator (the diffusion recipe)


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # discriminator steps
    nimg: int = 0  # real images shown, all processes
    best_kid: float | None = None  # --select-snapshot: the lowest validation KID so far, and when
    best_kimg: float | None = None
    new_best: bool = False  # the snapshot just taken is the best: write best.pt with this epoch's checkpoint
    ada: dict | None = None  # adaptive augmentation's controller (AdaptiveP.state_dict), None without ADA
    lecam: dict | None = None  # LeCam's moving averages, None without LeCam


def build_networks(cfg: GanConfig, model: dict, rt: runtime.Runtime) -> Networks:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    G, D = build_models(model)
    G, D = rt.layout(G.to(rt.device)), rt.layout(D.to(rt.device))
    ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
    has_d = any(True for _ in D.parameters())  # the diffusion recipe's stand-in has none
    return Networks(G, D, ema, torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
                    torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)) if has_d else None)


def resume(cfg: GanConfig, nets: Networks, data_gen: torch.Generator, identity: dict, rt: runtime.Runtime,
           out: Path) -> TrainState:
    """Continue from the newest checkpoint in ``out`` that loads (``last.pt``, or a ``ckpt-EEEEEE.pt`` written after
    it by a process killed before its ``last.pt``), restoring every RNG; otherwise clear out an earlier run."""
    last, saved, refused = checkpoint.resumable(out) if cfg.resume else (None, None, [])
    if rt.main:
        for reason in refused:
            _note(f"passed over: {reason}")
    if saved is None and refused:
        if not cfg.overwrite:
            raise UserError(f"{out} holds no checkpoint that loads ({refused[0]}); use another --out, or pass "
                            "--overwrite to start over there")
        if rt.main:
            _note(f"no checkpoint in {out} loads, so the run there cannot be continued: starting over")
    if saved is not None and cfg.overwrite:  # a run made with other settings or data is replaced, not continued
        changed = checkpoint.settings_changed(saved, asdict(cfg))
        if (saved.get("dataset") or {}).get("content_sha256") != identity["content_sha256"]:
            changed = ", ".join(filter(None, [changed, "the training data"]))
        if saved.get("epoch", 0) > cfg.epochs:  # a longer run cannot be cut back to the length asked for
            longer = f"trained to epoch {saved['epoch']}, past --epochs {cfg.epochs}"
            changed = ", ".join(filter(None, [changed, longer]))
        if changed:
            if rt.main:
                _note(f"{last} was trained with other settings ({changed})")
            saved = None
    if rt.world > 1:  # every process has read last.pt before the main one may delete it (starting over)
        dist.barrier()
    if saved is not None:
        with torchfile.rebuilding(last, "GAN checkpoint"):
            checkpoint.check_resumable(saved, asdict(cfg), identity["content_sha256"], last)
            for name in ("generator", "discriminator"):
                torchfile.check_finite(saved[name], last, "GAN checkpoint")
            nets.G.load_state_dict(saved["generator"])
            nets.D.load_state_dict(saved["discriminator"])
            if nets.ema is not None:  # a run that had no EMA starts one from its generator
                nets.ema.load_state_dict(saved["ema"] if saved.get("ema") is not None else saved["generator"])
            nets.opt_g.load_state_dict(saved["opt_g"])
            if nets.opt_d is not None:
                nets.opt_d.load_state_dict(saved["opt_d"])
            # the optimiser state carries the old run's learning rates and betas: apply this run's, as recorded
            for opt, lr in ((nets.opt_g, cfg.lr_g), (nets.opt_d, cfg.lr_d)):
                for group in opt.param_groups if opt is not None else []:
                    group["lr"], group["betas"] = lr, (cfg.beta1, cfg.beta2)
            best = saved.get("snapshot_best") or {}
            state = TrainState(saved["epoch"], saved["step"], saved["nimg"], best.get("kid"), best.get("kimg"),
                               ada=saved.get("ada"), lecam=saved.get("lecam"))
            data_gen.set_state(saved["data_gen"])
            rng = saved["rng"]
        if len(rng) == rt.world:
            torchfile.set_rng_state(rng[rt.rank])
        elif rt.main:
            _note(f"resuming with {rt.world} processes from a {len(rng)}-process checkpoint: random streams are "
                  "reseeded, so the continuation is not bit-identical")
        if rt.main:
            _note(f"resuming {last} at epoch {state.epoch} (step {state.step})")
            if last != out / "last.pt":  # last.pt is older or absent: what sampling reads must be this checkpoint
                with atomic_output(out / "last.pt") as tmp:
                    shutil.copyfile(last, tmp)
    else:
        state = TrainState()
        earlier = (out / "last.pt").is_file() or checkpoint.epoch_checkpoints(out)
        if earlier and not cfg.overwrite:
            raise UserError(f"{out} holds an earlier run; continue it (--resume, the default), or pass --overwrite "
                            "to delete it and start over, or choose another --out")
        if rt.main and earlier:
            _note(f"starting over in {out}: removing its earlier checkpoints, grids, loss and metric history")
            for old in [out / "last.pt", *checkpoint.epoch_checkpoints(out), *out.glob("grid-*.png"),
                        out / "losses.csv", out / "metrics.csv", out / "best.pt"]:
                old.unlink(missing_ok=True)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        for history in (out / "losses.csv", out / "metrics.csv"):  # rows past the checkpoint are redone
            _truncate_rows(history, state.step)
    return state


# ----------------------------------------------------------------------------------------------------------------
# The loop


def fit_to_fraction(cfg: GanConfig, n: int, n_full: int) -> None:
    """A GAN on a fraction of the patients (the low-data curve) trains as long as the full-data one, in images shown
    (--epochs count passes over the full training split), so "less real data" is not confounded with "shorter
    training"; and its batch shrinks to the images there are when they are fewer than --batch."""
    if cfg.kimg is None:
        cfg.kimg, cfg.epochs = cfg.epochs * n_full / 1000, None
        console.print(f"note: --real-fraction {cfg.real_fraction:g}: training for {cfg.kimg:g} kimg, as long as "
                      f"the full training split's {n_full} images x the epochs asked for")
    if n < cfg.batch:
        if n < 2:
            raise UserError(f"--real-fraction {cfg.real_fraction:g} leaves {n} training image(s); raise it")
        console.print(f"note: --real-fraction {cfg.real_fraction:g} leaves {n} images, fewer than --batch "
                      f"{cfg.batch}; using --batch {n}")
        cfg.batch = n


def _train(cfg: GanConfig, rt: runtime.Runtime, call_args: dict, progress: ProgressFn) -> dict:
    out = Path(cfg.out)
    recipe = RECIPES[cfg.recipe]
    data = load_training_images(cfg)
    if cfg.real_fraction < 1:
        fit_to_fraction(cfg, len(data.images), data.identity["n_full_split"])
    per_rank = cfg.batch // rt.world
    if per_rank < 1:
        raise UserError(f"--batch {cfg.batch} is smaller than the {rt.world} processes; raise --batch")
    n = len(data.images)
    steps_per_epoch = (n // rt.world) // per_rank
    if steps_per_epoch == 0:  # nothing would be trained, yet checkpoints and metrics would be written
        raise UserError(f"{n} training images cannot fill one batch of {per_rank} per process ({rt.world} "
                        "processes); lower --batch or use fewer processes")
    if cfg.epochs is None:  # --kimg: whole epochs, enough to show at least that many images
        cfg.epochs = max(1, math.ceil(cfg.kimg * 1000 / (steps_per_epoch * per_rank * rt.world)))
    snapshots = None
    if cfg.snapshot_kimg and rt.main:
        try:
            snapshots = Snapshots(cfg.data, cfg.cls, cfg.snapshot_n, cfg.snapshot_features, cfg.seed, data.images,
                                  data.labels, rt.device)
        except ValueError as e:
            raise UserError(f"--snapshot-kimg: {e}") from None
    if is_diffusion(recipe.networks):  # a diffusion model's latent is its starting noise: one value per pixel
        cfg.latent = data.identity["size"] ** 2 * cfg.channels
    model = model_description(recipe.networks, data.identity["size"], cfg.latent, cfg.base, cfg.channels,
                              data.classes, cfg.cls)
    nets = build_networks(cfg, model, rt)
    if rt.main:  # each checkpoint: G, D, EMA and Adam's two moments per weight; up to keep + last + best of them
        weights = sum(p.numel() for p in nets.G.parameters()) * (4 if nets.ema is not None else 3) \
            + sum(p.numel() for p in nets.D.parameters()) * 3
        check_free_space(out, 4 * weights * ((cfg.keep or cfg.epochs) + 2), f"--out {out} (checkpoints)")
    data_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed * 1000 + rt.rank)
    np.random.seed((cfg.seed * 1000 + rt.rank) % 2**32)
    class_ids = sorted({int(v) for v in data.labels.unique()})
    fixed = torch.Generator().manual_seed(12345 + cfg.seed)
    fixed_z = torch.randn(cfg.grid * len(class_ids), cfg.latent, generator=fixed)
    fixed_y = torch.tensor([c for c in class_ids for _ in range(cfg.grid)], dtype=torch.long)
    state = resume(cfg, nets, data_gen, data.identity, rt, out)

    summary_path = out / "summary.json"  # written when a run reaches its length: the "finished" marker for make
    if state.epoch >= cfg.epochs:
        if rt.main:
            _note(f"{out} is already trained to epoch {state.epoch} (--epochs {cfg.epochs}); nothing to do")
            if not summary_path.exists():
                write_json_atomic(summary_path, {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000})
            os.utime(summary_path)  # checked and up to date: newer than what make asked it against
        return {"epochs": state.epoch, "step": state.step, "out": str(out), "trained": False}
    if rt.main:
        summary_path.unlink(missing_ok=True)

    G_train, D_train = nets.G, nets.D
    if rt.world > 1:
        ddp_args = {"device_ids": [rt.device.index]} if rt.cuda else {}
        G_train = torch.nn.parallel.DistributedDataParallel(nets.G, **ddp_args)
        if nets.opt_d is not None:  # a discriminator with weights to train
            D_train = torch.nn.parallel.DistributedDataParallel(nets.D, **ddp_args)
    if cfg.compile:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)
    step = DenoisingStep(cfg, rt, nets, G_train) if cfg.loss == "denoising" else \
        Step(cfg, rt, nets, G_train, D_train, per_rank, state.ada, state.lecam)
    images_dev, labels_dev = data.images.to(rt.device), data.labels.to(rt.device)

    t_start, start_step, data_seconds = time.perf_counter(), state.step, 0.0
    task = progress("train", (cfg.epochs - state.epoch) * steps_per_epoch) if rt.main else no_progress("train")
    for epoch in range(state.epoch, cfg.epochs):
        nimg_before = state.nimg
        shard = torch.randperm(n, generator=data_gen)[rt.rank::rt.world].to(rt.device)
        rows, t_epoch = [], time.perf_counter()
        G_train.train(), D_train.train()
        for i in range(steps_per_epoch):
            t_fetch = time.perf_counter()
            idx = shard[i * per_rank:(i + 1) * per_rank]
            real, y = step.real_batch(images_dev[idx]), labels_dev[idx]
            data_seconds += time.perf_counter() - t_fetch
            ld, lg, dr, df = step(real, y, state)
            if not (math.isfinite(ld) and math.isfinite(lg)):
                last = out / "last.pt"
                raise UserError(f"non-finite loss at epoch {epoch + 1}, step {state.step} (D {ld}, G {lg}); stopped. "
                                f"The last good checkpoint is {last if last.exists() else 'none yet'}; "
                                "lower --lr-g/--lr-d or change --seed")
            elapsed = time.perf_counter() - t_epoch
            rate = (i + 1) * per_rank * rt.world / elapsed if elapsed > 0 else 0.0
            rows.append([epoch + 1, state.step, round(state.nimg / 1000, 4), ld, lg, dr, df, round(rate, 2),
                         round(time.perf_counter() - t_start, 3), "" if step.ada is None else round(step.ada.p, 6)])
            task(1, info=f"epoch {epoch + 1}/{cfg.epochs}  D {ld:.3f}  G {lg:.3f}  {rate:,.0f} img/s")
        state.epoch = epoch + 1
        if snapshots is not None and (_crossed(nimg_before, state.nimg, cfg.snapshot_kimg)
                                      or state.epoch == cfg.epochs):
            row = snapshots.measure(nets.ema if nets.ema is not None else nets.G, nets.D, cfg.latent, cfg.channels)
            row.update(epoch=state.epoch, step=state.step, kimg=round(state.nimg / 1000, 4))
            append_snapshot(out / "metrics.csv", row)
            plot_losses(out / "metrics.csv", out / "metrics.png", columns=SNAPSHOT_PLOT, ylabel="value")
            better = row.get("kid") is not None and (state.best_kid is None or row["kid"] < state.best_kid)
            if cfg.select_snapshot and better:
                state.best_kid, state.best_kimg = row["kid"], row["kimg"]
                state.new_best = True
        state.ada = step.ada.state_dict() if step.ada is not None else None
        state.lecam = step.lecam.state_dict() if step.lecam is not None else None
        end_of_epoch(cfg, rt, nets, state, rows, model, data, data_gen, fixed_z, fixed_y, call_args, out)
    seconds = time.perf_counter() - t_start
    result = {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000, "seconds": seconds,
              "img_per_s": (state.step - start_step) * per_rank * rt.world / seconds if seconds > 0 else 0.0,
              "data_fraction": data_seconds / seconds if seconds > 0 else 0.0,  # share of time fetching batches
              "out": str(out), "trained": True, "recipe": cfg.recipe, "cls": cfg.cls, "world": rt.world}
    if rt.main:
        write_json_atomic(summary_path, {**result, "config": _plain(asdict(cfg)), "dataset": data.identity})
    return result


def result_line(result: dict) -> str:
    """What train_dcgan and train_diffusion print at the end of a run that trained."""
    return (f"trained to epoch {result['epochs']} ({result['step']} steps, {result['kimg']:.1f}k images) in "
            f"{result['seconds']:.0f}s, {result['img_per_s']:,.1f} img/s; checkpoints in {result['out']}")


def _crossed(nimg_before: int, nimg_after: int, every_kimg: float) -> bool:
    """Did the images shown pass a multiple of ``every_kimg`` thousand during the epoch?"""
    every = every_kimg * 1000
    return math.floor(nimg_after / every) > math.floor(nimg_before / every)


class Step:
    """One discriminator step then ``g_steps`` generator steps, for the recipe's loss and augmentation."""

    def __init__(self, cfg: GanConfig, rt: runtime.Runtime, nets: Networks, G_train, D_train, per_rank: int,
                 ada_state: dict | None = None, lecam_state: dict | None = None):
        self.cfg, self.rt, self.nets, self.G_train, self.D_train = cfg, rt, nets, G_train, D_train
        self.loss = LOSSES[cfg.loss]
        self.policy = parse_policy(cfg.augment)
        self.per_rank = per_rank
        self.ada = AdaptiveP(cfg.ada_target, cfg.ada_kimg, cfg.batch) if cfg.ada_target is not None else None
        if self.ada is not None and ada_state is not None:
            self.ada.load_state_dict(ada_state)  # resumed: continue p where the checkpoint left it
        self.lecam = LeCam() if cfg.lecam > 0 else None
        if self.lecam is not None and lecam_state is not None:
            self.lecam.load_state_dict(lecam_state)
        if cfg.r1_gamma > 0 and rt.world > 1:
            raise UserError("--r1-gamma is not supported with several processes yet (DistributedDataParallel has no "
                            "double backward); train in one process or use --r1-gamma 0")
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The recipe's DiffAugment policy, then ADA's transforms with the current p (same for real and fake)."""
        if self.policy:
            x = diff_augment(x, self.policy)
        return ada_augment(x, self.ada.p) if self.ada is not None else x

    def real_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_input(images)
        if self.cfg.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return self.rt.layout(x)

    def __call__(self, real: torch.Tensor, y: torch.Tensor, state: TrainState) -> list[float]:
        """Update the networks on one batch; returns (loss_d, loss_g, mean D(real), mean D(fake)), averaged over
        processes."""
        cfg, rt, nets, G, D = self.cfg, self.rt, self.nets, self.G_train, self.D_train
        n = self.per_rank
        # discriminator step: real and generated images in separate passes (separate batch-norm statistics)
        with torch.no_grad(), rt.autocast():
            fake = G(torch.randn(n, cfg.latent, device=rt.device), y)
        r1_step = cfg.r1_gamma > 0 and state.step % R1_INTERVAL == 0
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
        nets.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        nets.opt_d.step()
        if self.ada is not None:  # ADA's overfitting heuristic, over every process's real images
            signs = torch.stack([torch.sign(out_real.detach()).sum(), torch.tensor(float(out_real.numel()),
                                                                                   device=out_real.device)])
            if rt.world > 1:
                dist.all_reduce(signs)
            self.ada.observe(*signs.tolist())
        # generator step(s); D is frozen and called without its DDP wrapper (its gradients are not needed)
        nets.D.requires_grad_(False)
        for _ in range(cfg.g_steps):
            with rt.autocast():
                fake = G(torch.randn(n, cfg.latent, device=rt.device), y)
                loss_g = self.loss.generator(nets.D(self.augment(fake), y).float())
            nets.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            nets.opt_g.step()
        nets.D.requires_grad_(True)
        state.step += 1
        state.nimg += n * rt.world
        if nets.ema is not None:
            ema_update(nets.ema, nets.G, ema_beta(cfg.ema_kimg, state.nimg, n * rt.world))
        values = torch.stack([loss_d.detach(), loss_g.detach(), out_real.detach().mean(), out_fake.detach().mean()])
        if rt.world > 1:
            dist.all_reduce(values)
            values /= rt.world
        return values.tolist()


class DenoisingStep:
    """The diffusion recipes' step: one update of the denoiser on its denoising loss (generative.edm). Reported
    in the loss columns as loss_g; the discriminator columns stay 0."""

    ada = lecam = None

    def __init__(self, cfg: GanConfig, rt: runtime.Runtime, nets: Networks, G_train):
        self.cfg, self.rt, self.nets, self.G_train = cfg, rt, nets, G_train

    def real_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_input(images)
        return self.rt.layout(x.expand(-1, 3, -1, -1) if self.cfg.channels == 3 else x)

    def __call__(self, real: torch.Tensor, y: torch.Tensor, state: TrainState) -> list[float]:
        cfg, rt, nets = self.cfg, self.rt, self.nets
        with rt.autocast():
            loss = nets.G.training_loss(lambda x, sigma, labels: self.G_train(x, labels, sigma=sigma), real, y,
                                        nets.G.denoiser.n_classes)
        nets.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        nets.opt_g.step()
        state.step += 1
        state.nimg += len(real) * rt.world
        if nets.ema is not None:
            ema_update(nets.ema, nets.G, ema_beta(cfg.ema_kimg, state.nimg, len(real) * rt.world))
        value = loss.detach().reshape(1)
        if rt.world > 1:
            dist.all_reduce(value)
            value /= rt.world
        return [0.0, value.item(), 0.0, 0.0]


# ----------------------------------------------------------------------------------------------------------------
# End of an epoch: loss history, fixed-noise grid, checkpoint (and best.pt after a better metric snapshot)


def end_of_epoch(cfg: GanConfig, rt: runtime.Runtime, nets: Networks, state: TrainState, rows: list, model: dict,
             data: TrainingImages, data_gen: torch.Generator, fixed_z, fixed_y, call_args: dict, out: Path) -> None:
    rng_states = [torchfile.rng_state()]
    if rt.world > 1:
        rng_states = [None] * rt.world
        dist.all_gather_object(rng_states, torchfile.rng_state())
    if rt.main:
        _append_losses(out / "losses.csv", rows)
        milestone = state.epoch % cfg.ckpt_every == 0 or state.epoch == cfg.epochs  # epoch checkpoint, grid, plot
        if milestone:
            sampler = nets.ema if nets.ema is not None else nets.G
            images = generate(sampler, fixed_z, fixed_y, rt.device)
            panels = {data.classes[c]: images[(fixed_y == c).numpy()] for c in sorted(set(fixed_y.tolist()))}
            save_grid(out / f"grid-{state.epoch:06d}.png", panels,
                      f"{cfg.recipe} recipe, epoch {state.epoch}, {state.nimg / 1000:.1f}k images shown",
                      cols=math.isqrt(cfg.grid) if math.isqrt(cfg.grid) ** 2 == cfg.grid else 8)
            plot_losses(out / "losses.csv", out / "losses.png")
        payload = {
            "config": _plain(asdict(cfg)), "args": _plain(call_args), "model": model,
            "dataset": data.identity, "epoch": state.epoch, "step": state.step, "nimg": state.nimg,
            "generator": nets.G.state_dict(), "discriminator": nets.D.state_dict(),
            "ema": nets.ema.state_dict() if nets.ema is not None else None,
            "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict() if nets.opt_d is not None else None,
            "rng": [_cpu(s) for s in rng_states], "data_gen": data_gen.get_state(),
            "fixed_z": fixed_z, "fixed_y": fixed_y, "world": rt.world,
            "snapshot_best": {"kid": state.best_kid, "kimg": state.best_kimg}, "ada": state.ada,
            "lecam": state.lecam,
        }
        if state.new_best:
            checkpoint.save(payload, out / "best.pt")
            state.new_best = False
        if milestone:
            checkpoint.save(payload, checkpoint.epoch_path(out, state.epoch), out / "last.pt")
            checkpoint.prune(out, cfg.keep)
        else:
            checkpoint.save(payload, out / "last.pt")
    if rt.world > 1:
        dist.barrier()


def _note(text: str) -> None:
    console.print(f"[cyan]note:[/] {text}")


def _plain(d):
    """JSON-like copy: tuples to lists, paths to strings (checkpoints hold plain values only)."""
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    if isinstance(d, (str, int, float, bool)) or d is None:
        return d
    return str(d)


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def _append_losses(path: Path, rows: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(LOSS_COLUMNS)
        w.writerows(rows)


def _truncate_rows(path: Path, step: int) -> None:
    """Drop rows past the checkpoint being resumed (written by a run that died mid-epoch); all rows if step 0."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [r for r in rows[1:] if r and int(r[1]) <= step]
    if step == 0:
        path.unlink()
        return
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + kept)
    os.replace(tmp, path)
