"""train_dcgan: one plain training loop for every recipe in ``generative.recipes``, whatever its objective.

Single process or data-parallel under ``torchrun`` (DistributedDataParallel; nccl on GPU, gloo on CPU; rank 0
alone writes). A run goes through: the configuration (``config.GanConfig``), the training images, the networks
and optimisers its objective trains (``objectives``), resuming (``checkpoint.resume``), the epochs of steps, and
the end of each epoch (losses, grid, metric snapshot, checkpoint). Everything a run holds is one ``Run``. Every
epoch ends with an atomic checkpoint holding everything needed to continue exactly: networks, EMA, optimisers,
the objective's state, counters, all RNG states, the config and the dataset's identity.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import runtime, torchfile
from ..cli import ProgressFn, console, no_progress
from ..data.reader import H5ImageDataset, to_model_input
from ..data.splits import patient_fraction
from ..errors import UserError
from ..fileio import check_free_space, write_json_atomic
from ..figures import plot_losses, save_grid
from . import checkpoint, networks
from .checkpoint import TrainState
from .config import GanConfig, options_help
from .dcgan import check_size
from .objectives import OBJECTIVES
from .recipes import RECIPES, Recipe
from .snapshots import Snapshots
from .snapshots import append as append_snapshot

__all__ = ["GanConfig", "train", "result_line", "OPTIONS_HELP"]

SNAPSHOT_PLOT = ("kid", "recall", "pixel_diversity", "rt_train", "rt_val")
OPTIONS_HELP = options_help()  # the options' help, shared by tools/train_dcgan.py and tools/train_diffusion.py


def train(cfg: GanConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Train to ``cfg.epochs`` epochs (or ``cfg.kimg``), resuming from ``out/last.pt`` when allowed. Returns a
    summary."""
    cfg = cfg.resolved()
    rt = runtime.setup(cfg.device, distributed=True, precision=cfg.precision)
    try:
        run = prepare(cfg, rt, call_args or {})
        return train_epochs(run, progress)
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


# ----------------------------------------------------------------------------------------------------------------
# Networks, optimisers, and the run


@dataclass
class Networks:
    modules: dict[str, torch.nn.Module]  # the objective's networks by part ("generator", "discriminator", ...)
    ema: torch.nn.Module | None  # the moving average of the part that generates (sampled from); None without EMA
    optimizers: dict[str, torch.optim.Optimizer]  # by part


@dataclass
class Run:
    """Everything a training run holds, from its start to its last checkpoint."""

    cfg: GanConfig
    rt: runtime.Runtime
    recipe: Recipe
    objective: object  # a row of generative.objectives.OBJECTIVES
    out: Path
    data: TrainingImages
    model: dict  # generative.networks.model_description
    nets: Networks
    data_gen: torch.Generator  # the data order's random stream (checkpointed)
    fixed_z: torch.Tensor  # the grids' fixed latents and labels
    fixed_y: torch.Tensor
    call_args: dict
    per_rank: int  # images per process per step
    steps_per_epoch: int
    snapshots: Snapshots | None = None
    state: TrainState = field(default_factory=TrainState)

    @property
    def sampled(self) -> torch.nn.Module:
        """The network images are made with: the EMA when there is one."""
        return self.nets.ema if self.nets.ema is not None else self.nets.modules[self.objective.sampled]

    def sampler(self):
        """(z, labels) -> images with the sampled network, as grids and snapshots make them."""
        return self.objective.sampler(self.sampled, self.model)


def build_networks(cfg: GanConfig, model: dict, objective, rt: runtime.Runtime) -> Networks:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    modules = {part: rt.layout(m.to(rt.device)) for part, m in networks.build(model).items()}
    ema = copy.deepcopy(modules[objective.sampled]).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
    return Networks(modules, ema, objective.optimizers(cfg, modules))


def prepare(cfg: GanConfig, rt: runtime.Runtime, call_args: dict) -> Run:
    """The run's data, length, networks and random streams, continued from its checkpoint when there is one."""
    recipe = RECIPES[cfg.recipe]
    objective = OBJECTIVES[recipe.objective]
    data = load_training_images(cfg)
    if cfg.real_fraction < 1:
        fit_to_fraction(cfg, len(data.images), data.identity["n_full_split"])
    per_rank, steps_per_epoch = _batches(cfg, rt, len(data.images))
    if cfg.epochs is None:  # --kimg: whole epochs, enough to show at least that many images
        cfg.epochs = max(1, math.ceil(cfg.kimg * 1000 / (steps_per_epoch * per_rank * rt.world)))
    snapshots = None
    if cfg.snapshot_kimg and rt.main:
        try:
            snapshots = Snapshots(cfg.data, cfg.cls, cfg.snapshot_n, cfg.snapshot_features, cfg.seed, data.images,
                                  data.labels, rt.device)
        except ValueError as e:
            raise UserError(f"--snapshot-kimg: {e}") from None
    cfg.latent = objective.latent(cfg, data.identity["size"])
    model = networks.model_description(recipe.networks, data.identity["size"], cfg.latent, cfg.base, cfg.channels,
                                       data.classes, cfg.cls, **objective.model_extras(recipe.settings))
    nets = build_networks(cfg, model, objective, rt)
    out = Path(cfg.out)
    if rt.main:  # each checkpoint: the networks, the EMA and Adam's two moments per weight; keep + last + best
        weights = sum(p.numel() for m in nets.modules.values() for p in m.parameters()) * 3 \
            + (sum(p.numel() for p in nets.ema.parameters()) if nets.ema is not None else 0)
        check_free_space(out, 4 * weights * ((cfg.keep or cfg.epochs) + 2), f"--out {out} (checkpoints)")
    data_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed * 1000 + rt.rank)
    np.random.seed((cfg.seed * 1000 + rt.rank) % 2**32)
    class_ids = sorted({int(v) for v in data.labels.unique()})
    fixed = torch.Generator().manual_seed(12345 + cfg.seed)
    fixed_z = torch.randn(cfg.grid * len(class_ids), cfg.latent, generator=fixed)
    fixed_y = torch.tensor([c for c in class_ids for _ in range(cfg.grid)], dtype=torch.long)
    run = Run(cfg, rt, recipe, objective, out, data, model, nets, data_gen, fixed_z, fixed_y, call_args, per_rank,
              steps_per_epoch, snapshots)
    run.state = checkpoint.resume(run)
    return run


def _batches(cfg: GanConfig, rt: runtime.Runtime, n: int) -> tuple[int, int]:
    """(images per process per step, steps per epoch)."""
    per_rank = cfg.batch // rt.world
    if per_rank < 1:
        raise UserError(f"--batch {cfg.batch} is smaller than the {rt.world} processes; raise --batch")
    steps_per_epoch = (n // rt.world) // per_rank
    if steps_per_epoch == 0:  # nothing would be trained, yet checkpoints and metrics would be written
        raise UserError(f"{n} training images cannot fill one batch of {per_rank} per process ({rt.world} "
                        "processes); lower --batch or use fewer processes")
    return per_rank, steps_per_epoch


# ----------------------------------------------------------------------------------------------------------------
# The loop


def train_epochs(run: Run, progress: ProgressFn = no_progress) -> dict:
    """Train from the run's state to its last epoch, writing each epoch's losses, grid, snapshot and checkpoint."""
    cfg, rt, state = run.cfg, run.rt, run.state
    summary_path = run.out / "summary.json"  # written when a run reaches its length: the "finished" marker for make
    if state.epoch >= cfg.epochs:
        return _already_trained(run, summary_path)
    if rt.main:
        summary_path.unlink(missing_ok=True)
    trained = _trained_modules(run)
    step = run.objective.step(cfg, rt, run.nets.modules, trained, run.nets.optimizers, run.per_rank,
                              state.objective_state, run.model, run.recipe.settings)
    images_dev, labels_dev = run.data.images.to(rt.device), run.data.labels.to(rt.device)
    t_start, start_step, data_seconds = time.perf_counter(), state.step, 0.0
    task = progress("train", (cfg.epochs - state.epoch) * run.steps_per_epoch) if rt.main else no_progress("train")
    for epoch in range(state.epoch, cfg.epochs):
        nimg_before = state.nimg
        shard = _epoch_order(run)[rt.rank::rt.world].to(rt.device)
        rows, t_epoch = [], time.perf_counter()
        for module in trained.values():
            module.train()
        for i in range(run.steps_per_epoch):
            t_fetch = time.perf_counter()
            idx = shard[i * run.per_rank:(i + 1) * run.per_rank]
            real, y = _model_input(run, images_dev[idx]), labels_dev[idx]
            data_seconds += time.perf_counter() - t_fetch
            values = step(real, y, state.step)
            _advance(run, len(real))
            _check_finite(run, values, epoch)
            elapsed = time.perf_counter() - t_epoch
            rate = (i + 1) * run.per_rank * rt.world / elapsed if elapsed > 0 else 0.0
            values.update(img_per_s=round(rate, 2), seconds=round(time.perf_counter() - t_start, 3))
            rows.append([epoch + 1, state.step, round(state.nimg / 1000, 4)]
                        + [values[c] for c in run.objective.loss_columns])
            losses = "  ".join(f"{k.removeprefix('loss_').upper() if k != 'loss' else 'loss'} {v:.3f}"
                               for k, v in values.items() if k.startswith("loss"))
            task(1, info=f"epoch {epoch + 1}/{cfg.epochs}  {losses}  {rate:,.0f} img/s")
        state.epoch = epoch + 1
        if run.snapshots is not None and (_crossed(nimg_before, state.nimg, cfg.snapshot_kimg)
                                          or state.epoch == cfg.epochs):
            take_snapshot(run)
        state.objective_state = step.state_dict()
        end_of_epoch(run, rows)
    seconds = time.perf_counter() - t_start
    result = {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000, "seconds": seconds,
              "img_per_s": (state.step - start_step) * run.per_rank * rt.world / seconds if seconds > 0 else 0.0,
              "data_fraction": data_seconds / seconds if seconds > 0 else 0.0,  # share of time fetching batches
              "out": str(run.out), "trained": True, "recipe": cfg.recipe, "cls": cfg.cls, "world": rt.world}
    if rt.main:
        write_json_atomic(summary_path, {**result, "config": _plain(asdict(cfg)), "dataset": run.data.identity})
    return result


def _epoch_order(run: Run) -> torch.Tensor:
    """One epoch's image indices: a permutation, or with --balance as many draws with each class equally likely
    (replacement, as torch's WeightedRandomSampler), so a class with 80 images trains as often as one with 250."""
    n, labels = len(run.data.images), run.data.labels
    counts = torch.bincount(labels)
    if not run.cfg.balance or (counts > 0).sum() < 2:
        return torch.randperm(n, generator=run.data_gen)
    return torch.multinomial(1.0 / counts[labels].double(), n, replacement=True, generator=run.data_gen)


def _already_trained(run: Run, summary_path: Path) -> dict:
    state = run.state
    if run.rt.main:
        _note(f"{run.out} is already trained to epoch {state.epoch} (--epochs {run.cfg.epochs}); nothing to do")
        if not summary_path.exists():
            write_json_atomic(summary_path, {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000})
        os.utime(summary_path)  # checked and up to date: newer than what make asked it against
    return {"epochs": state.epoch, "step": state.step, "out": str(run.out), "trained": False}


def _trained_modules(run: Run) -> dict[str, torch.nn.Module]:
    """The networks as the step calls them: wrapped for several processes (those with weights to train) and
    compiled when asked."""
    trained = dict(run.nets.modules)
    if run.rt.world > 1:
        ddp_args = {"device_ids": [run.rt.device.index]} if run.rt.cuda else {}
        trained = {part: torch.nn.parallel.DistributedDataParallel(m, **ddp_args) if part in run.nets.optimizers
                   else m for part, m in trained.items()}
    if run.cfg.compile:
        trained = {part: torch.compile(m) for part, m in trained.items()}
    return trained


def _model_input(run: Run, images: torch.Tensor) -> torch.Tensor:
    x = to_model_input(images)
    if run.cfg.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return run.rt.layout(x)


def _advance(run: Run, per_rank: int) -> None:
    """After a step: the counters, and the moving average of the network that generates."""
    state, nets = run.state, run.nets
    state.step += 1
    state.nimg += per_rank * run.rt.world
    if nets.ema is not None:
        networks.ema_update(nets.ema, nets.modules[run.objective.sampled],
                            networks.ema_beta(run.cfg.ema_kimg, state.nimg, per_rank * run.rt.world))


def _check_finite(run: Run, values: dict, epoch: int) -> None:
    losses = {k: v for k, v in values.items() if k.startswith("loss")}
    if not all(math.isfinite(v) for v in losses.values()):
        last = run.out / "last.pt"
        shown = ", ".join(f"{k} {v}" for k, v in losses.items())
        raise UserError(f"non-finite loss at epoch {epoch + 1}, step {run.state.step} ({shown}); stopped. "
                        f"The last good checkpoint is {last if last.exists() else 'none yet'}; "
                        "lower the learning rates (--lr-g, --lr-d) or change --seed")


def result_line(result: dict) -> str:
    """What train_dcgan and train_diffusion print at the end of a run that trained."""
    return (f"trained to epoch {result['epochs']} ({result['step']} steps, {result['kimg']:.1f}k images) in "
            f"{result['seconds']:.0f}s, {result['img_per_s']:,.1f} img/s; checkpoints in {result['out']}")


def _crossed(nimg_before: int, nimg_after: int, every_kimg: float) -> bool:
    """Did the images shown pass a multiple of ``every_kimg`` thousand during the epoch?"""
    every = every_kimg * 1000
    return math.floor(nimg_after / every) > math.floor(nimg_before / every)


# ----------------------------------------------------------------------------------------------------------------
# End of an epoch: loss history, metric snapshot, fixed-noise grid, checkpoint (and best.pt after a better snapshot)


def take_snapshot(run: Run) -> None:
    state, out = run.state, run.out
    row = run.snapshots.measure(run.sampled, run.sampler(), run.cfg.latent)
    fake = row.pop("images")
    row.update(run.objective.snapshot(run.snapshots, run.nets.modules, fake, run.cfg.channels))
    row.update(epoch=state.epoch, step=state.step, kimg=round(state.nimg / 1000, 4))
    append_snapshot(out / "metrics.csv", row, run.objective.snapshot_columns)
    plot_losses(out / "metrics.csv", out / "metrics.png", columns=SNAPSHOT_PLOT, ylabel="value")
    better = row.get("kid") is not None and (state.best_kid is None or row["kid"] < state.best_kid)
    if run.cfg.select_snapshot and better:
        state.best_kid, state.best_kimg = row["kid"], row["kimg"]
        state.new_best = True


def end_of_epoch(run: Run, rows: list) -> None:
    cfg, rt, state, out = run.cfg, run.rt, run.state, run.out
    rng_states = [torchfile.rng_state()]
    if rt.world > 1:
        rng_states = [None] * rt.world
        dist.all_gather_object(rng_states, torchfile.rng_state())
    if rt.main:
        _append_losses(out / "losses.csv", rows, run.objective.loss_columns)
        milestone = state.epoch % cfg.ckpt_every == 0 or state.epoch == cfg.epochs  # epoch checkpoint, grid, plot
        if milestone:
            _save_grid(run)
            plot_losses(out / "losses.csv", out / "losses.png")
        payload = _payload(run, rng_states)
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


def _save_grid(run: Run) -> None:
    state, classes, grid = run.state, run.data.classes, run.cfg.grid
    images = networks.generate(run.sampled, run.sampler(), run.fixed_z, run.fixed_y, run.rt.device)
    panels = {classes[c]: images[(run.fixed_y == c).numpy()] for c in sorted(set(run.fixed_y.tolist()))}
    save_grid(run.out / f"grid-{state.epoch:06d}.png", panels,
              f"{run.cfg.recipe} recipe, epoch {state.epoch}, {state.nimg / 1000:.1f}k images shown",
              cols=math.isqrt(grid) if math.isqrt(grid) ** 2 == grid else 8)


def _payload(run: Run, rng_states: list) -> dict:
    """A checkpoint's contents (docs/dataset-format.md): tensors and plain values only."""
    state, nets = run.state, run.nets
    return {
        "config": _plain(asdict(run.cfg)), "args": _plain(run.call_args), "model": run.model,
        "objective": run.objective.name, "dataset": run.data.identity, "epoch": state.epoch, "step": state.step,
        "nimg": state.nimg, "networks": {part: m.state_dict() for part, m in nets.modules.items()},
        "ema": nets.ema.state_dict() if nets.ema is not None else None,
        "optimizers": {part: opt.state_dict() for part, opt in nets.optimizers.items()},
        "objective_state": state.objective_state, "rng": [_cpu(s) for s in rng_states],
        "data_gen": run.data_gen.get_state(), "fixed_z": run.fixed_z, "fixed_y": run.fixed_y, "world": run.rt.world,
        "snapshot_best": {"kid": state.best_kid, "kimg": state.best_kimg},
    }


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


def _append_losses(path: Path, rows: list, columns: tuple[str, ...]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", "step", "kimg", *columns])
        w.writerows(rows)
