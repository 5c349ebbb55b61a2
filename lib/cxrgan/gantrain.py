"""GAN training: the reference study's DCGAN recipe and the improved limited-data recipe, in one plain loop.

Single process or data-parallel under ``torchrun`` (DistributedDataParallel; nccl on GPU, gloo on CPU; rank 0
alone writes). Every epoch ends with an atomic checkpoint holding everything needed to continue exactly:
models, EMA, optimisers, counters, all RNG states, the config and the dataset's identity.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint as ckpt
from .cgan import ConditionalGenerator, ProjectionDiscriminator
from .dcgan import Discriminator, Generator, check_size
from .diffaug import POLICIES, diff_augment, parse_policy
from .errors import UserError
from .fileio import write_json_atomic
from .figures import plot_losses, save_grid
from .reader import H5ImageDataset, to_uint8

CHECKPOINT_FORMAT = "cxrgan-gan/1"
RECIPES = {
    # The reference study, faithfully: DCGAN, BCE, Adam 2e-4 / 1e-4, betas (0.5, 0.999), G stepped twice per D step.
    "seed": dict(epochs=20, lr_g=2e-4, lr_d=1e-4, beta1=0.5, beta2=0.999, g_steps=2, loss="bce", augment="none",
                 ema_kimg=0.0),
    # One class-conditional model, spectral norm + projection D, hinge loss, DiffAugment, EMA generator.
    # Learning rates: the best of four (lr_G, lr_D) pairs on NIH 64x64 at equal wall-clock (bench/improved_lr.py).
    "improved": dict(epochs=20, lr_g=4e-4, lr_d=4e-4, beta1=0.0, beta2=0.99, g_steps=1, loss="hinge",
                     augment=",".join(POLICIES), ema_kimg=1.0),
}
LOSS_COLUMNS = ["epoch", "step", "kimg", "loss_d", "loss_g", "d_real", "d_fake", "img_per_s", "seconds"]


@dataclass
class GanConfig:
    data: str
    out: str = "outputs/gan"
    recipe: str = "improved"
    cls: int | None = None  # seed recipe: the one class this model learns
    epochs: int | None = None  # None: the recipe's value
    batch: int = 32
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    latent: int = 100
    base: int = 64
    channels: int = 1
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

    def resolved(self) -> "GanConfig":
        """Fill recipe defaults and validate. Raises UserError."""
        if self.recipe not in RECIPES:
            raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        cfg = copy.copy(self)
        for key, value in RECIPES[self.recipe].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        for name in ("epochs", "batch", "latent", "base", "ckpt_every", "g_steps", "grid"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        if cfg.channels not in (1, 3):
            raise UserError(f"--channels must be 1 (gray) or 3 (gray replicated, as in the study), got {cfg.channels!r}")
        if cfg.loss not in ("bce", "hinge"):
            raise UserError(f"--loss must be bce or hinge, got {cfg.loss!r}")
        for name in ("lr_g", "lr_d"):
            if not isinstance(getattr(cfg, name), (int, float)) or getattr(cfg, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(cfg, name)!r}")
        try:
            cfg.augment = ",".join(parse_policy(cfg.augment)) or "none"
        except ValueError as e:
            raise UserError(f"--augment: {e}") from None
        if self.recipe == "seed" and cfg.cls is None:
            raise UserError("--recipe seed trains one model per class: pass --cls 0 or --cls 1 (and a separate --out)")
        if cfg.cls is not None and (not isinstance(cfg.cls, int) or isinstance(cfg.cls, bool)):
            raise UserError(f"--cls must be a class index such as 0 or 1, got {cfg.cls!r}")
        if not isinstance(cfg.seed, int):
            raise UserError(f"--seed must be a whole number, got {cfg.seed!r}")
        return cfg

    @property
    def conditional(self) -> bool:
        return self.recipe == "improved"


# ----------------------------------------------------------------------------------------------------------------
# Models and losses


def build_models(kind: str, size: int, latent: int, base: int, channels: int, n_classes: int):
    """(generator, discriminator) for a checkpoint's ``model`` description."""
    check_size(size)
    if kind == "dcgan":
        return Generator(size, latent, base, channels), Discriminator(size, base, channels)
    if kind == "cgan":
        return (ConditionalGenerator(size, latent, base, channels, n_classes),
                ProjectionDiscriminator(size, base, channels, n_classes))
    raise UserError(f"unknown model kind {kind!r} in checkpoint")


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # the study: BCE(D(x), 1) + BCE(D(G(z)), 0)
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # non-saturating: BCE(D(G(z)), 1)
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return -fake.mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


# ----------------------------------------------------------------------------------------------------------------
# Runtime: device, distributed


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_runtime(device: str) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is visible; use --device cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, rank, world, local_rank)


# ----------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # discriminator steps
    nimg: int = 0  # real images shown, all processes
    rows: list = field(default_factory=list)


def _load_train_split(cfg: GanConfig):
    data = H5ImageDataset(cfg.data, "train", in_memory=True)
    try:
        check_size(data.size)
    except ValueError:
        raise UserError(f"GAN training needs a dataset whose size is a power of two from 32 to 512; {cfg.data} is "
                        f"{data.size}x{data.size} (rebuild it with tools/make_hdf5.py --size 64)") from None
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    if cfg.cls is not None:
        if not 0 <= cfg.cls < len(data.classes):
            raise UserError(f"--cls {cfg.cls}: {cfg.data} has classes 0..{len(data.classes) - 1} ({data.classes})")
        keep = labels == cfg.cls
        images, labels = images[keep], labels[keep]
    if len(images) < cfg.batch:
        raise UserError(f"{len(images)} training images (class {cfg.cls if cfg.cls is not None else 'all'}) is fewer "
                        f"than --batch {cfg.batch}; lower --batch")
    identity = {"path": str(Path(cfg.data).resolve()), "size": data.size, "classes": data.classes,
                "content_sha256": data.info.attrs.get("content_sha256", ""), "n_train": len(images)}
    return images, labels, data.classes, identity


def _model_desc(cfg: GanConfig, identity: dict) -> dict:
    return {"kind": "cgan" if cfg.conditional else "dcgan", "size": identity["size"], "latent": cfg.latent,
            "base": cfg.base, "channels": cfg.channels, "n_classes": len(identity["classes"]),
            "classes": identity["classes"], "cls": cfg.cls}


def _check_compatible(saved: dict, cfg: GanConfig, identity: dict, path: Path) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a cxrgan GAN checkpoint; use another --out or --resume=False")
    was = saved["config"]
    for key in ("recipe", "cls", "batch", "latent", "base", "channels", "loss", "augment", "g_steps"):
        if was.get(key) != getattr(cfg, key):
            raise UserError(f"{path} was trained with --{key.replace('_', '-')} {was.get(key)!r}, not {getattr(cfg, key)!r}: "
                            "use another --out, or --resume=False to start over there")
    if saved["dataset"]["content_sha256"] != identity["content_sha256"]:
        raise UserError(f"{path} was trained on different data ({saved['dataset']['path']}); use another --out, or "
                        "--resume=False to start over there")


def train(cfg: GanConfig, call_args: dict | None = None, progress=None) -> dict:
    """Train to ``cfg.epochs`` epochs, resuming from ``out/last.pt`` when allowed. Returns a summary."""
    cfg = cfg.resolved()
    rt = setup_runtime(cfg.device)
    try:
        return _train(cfg, rt, call_args, progress)
    finally:
        if rt.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: GanConfig, rt: Runtime, call_args, progress) -> dict:
    out = Path(cfg.out)
    images, labels, classes, identity = _load_train_split(cfg)
    model_desc = _model_desc(cfg, identity)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    G, D = build_models(model_desc["kind"], identity["size"], cfg.latent, cfg.base, cfg.channels, len(classes))
    G, D = G.to(rt.device), D.to(rt.device)
    if rt.cuda:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed * 1000 + rt.rank)
    np.random.seed((cfg.seed * 1000 + rt.rank) % 2**32)
    class_ids = sorted({int(v) for v in labels.unique()}) if cfg.conditional else [cfg.cls]
    fixed = torch.Generator().manual_seed(12345 + cfg.seed)
    fixed_z = torch.randn(cfg.grid * len(class_ids), cfg.latent, generator=fixed)
    fixed_y = torch.tensor([c for c in class_ids for _ in range(cfg.grid)], dtype=torch.long)
    state = TrainState()

    last = out / "last.pt"
    if cfg.resume and last.is_file():
        saved = ckpt.load(last)  # on the CPU; load_state_dict moves tensors to the device
        _check_compatible(saved, cfg, identity, last)
        G.load_state_dict(saved["generator"])
        D.load_state_dict(saved["discriminator"])
        if ema is not None and saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        state = TrainState(saved["epoch"], saved["step"], saved["nimg"])
        data_gen.set_state(saved["data_gen"])
        rng = saved["rng"]
        if len(rng) == rt.world:
            ckpt.set_rng_state(rng[rt.rank])
        elif rt.main:
            _note(f"resuming with {rt.world} processes from a {len(rng)}-process checkpoint: "
                            "random streams are reseeded, so the continuation is not bit-identical")
        if rt.main:
            _note(f"resuming {last} at epoch {state.epoch} (step {state.step})")
    elif rt.main and (last.is_file() or ckpt.epoch_checkpoints(out)):
        _note(f"starting over in {out}: removing its earlier checkpoints, grids and loss history")
        for old in [last, *ckpt.epoch_checkpoints(out), *out.glob("grid-*.png"), out / "losses.csv"]:
            old.unlink(missing_ok=True)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_losses(out / "losses.csv", state.step)

    summary_path = out / "summary.json"  # written when a run reaches --epochs: the "finished" marker for make
    if state.epoch >= cfg.epochs:
        if rt.main:
            _note(f"{out} is already trained to epoch {state.epoch} (--epochs {cfg.epochs}); nothing to do")
            if not summary_path.exists():
                write_json_atomic(summary_path, {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000})
        return {"epochs": state.epoch, "step": state.step, "out": str(out), "trained": False}
    if rt.main:
        summary_path.unlink(missing_ok=True)

    G_train, D_train = G, D
    if rt.world > 1:
        ddp_args = {"device_ids": [rt.device.index]} if rt.cuda else {}
        G_train = torch.nn.parallel.DistributedDataParallel(G, **ddp_args)
        D_train = torch.nn.parallel.DistributedDataParallel(D, **ddp_args)
    if cfg.compile:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)
    policy = parse_policy(cfg.augment)
    augment = (lambda x: diff_augment(x, policy)) if policy else (lambda x: x)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if rt.cuda else nullcontext
    per_rank = cfg.batch // rt.world
    if per_rank < 1:
        raise UserError(f"--batch {cfg.batch} is smaller than the {rt.world} processes; raise --batch")
    n = len(images)
    steps_per_epoch = (n // rt.world) // per_rank
    images_dev = images.to(rt.device)
    labels_dev = labels.to(rt.device)

    def real_batch(idx):
        x = images_dev[idx].unsqueeze(1).float().div_(127.5).sub_(1.0)
        if cfg.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if rt.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels_dev[idx]

    t_start, start_step, data_seconds = time.perf_counter(), state.step, 0.0
    task = progress.add_task("train", total=(cfg.epochs - state.epoch) * steps_per_epoch, info="") if (
        progress is not None and rt.main) else None
    for epoch in range(state.epoch, cfg.epochs):
        perm = torch.randperm(n, generator=data_gen)
        shard = perm[rt.rank::rt.world].to(rt.device)
        rows, t_epoch = [], time.perf_counter()
        G_train.train(), D_train.train()
        for i in range(steps_per_epoch):
            t_fetch = time.perf_counter()
            real, y = real_batch(shard[i * per_rank:(i + 1) * per_rank])
            data_seconds += time.perf_counter() - t_fetch
            y_in = y if cfg.conditional else None
            # discriminator step: real and generated images in separate passes (separate batch-norm statistics)
            with torch.no_grad(), autocast():
                fake = G_train(torch.randn(per_rank, cfg.latent, device=rt.device), y_in)
            with autocast():
                out_real = D_train(augment(real), y_in).float()
                out_fake = D_train(augment(fake.detach()), y_in).float()
                loss_d = d_loss(cfg.loss, out_real, out_fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator step(s); D is frozen and called without its DDP wrapper (its gradients are not needed)
            D.requires_grad_(False)
            for _ in range(cfg.g_steps):
                with autocast():
                    fake = G_train(torch.randn(per_rank, cfg.latent, device=rt.device), y_in)
                    loss_g = g_loss(cfg.loss, D(augment(fake), y_in).float())
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            D.requires_grad_(True)
            state.step += 1
            state.nimg += per_rank * rt.world
            if ema is not None:
                ema_nimg = min(cfg.ema_kimg * 1000, state.nimg * 0.05)  # ramp-up: short memory early on
                ema_update(ema, G, 0.5 ** (per_rank * rt.world / max(ema_nimg, 1e-8)))
            values = torch.stack([loss_d.detach(), loss_g.detach(), out_real.detach().mean(), out_fake.detach().mean()])
            if rt.world > 1:
                dist.all_reduce(values)
                values /= rt.world
            ld, lg, dr, df = values.tolist()
            if not (math.isfinite(ld) and math.isfinite(lg)):
                raise UserError(f"non-finite loss at epoch {epoch + 1}, step {state.step} (D {ld}, G {lg}); stopped. "
                                f"The last good checkpoint is {last if last.exists() else 'none yet'}; "
                                "lower --lr-g/--lr-d or change --seed")
            elapsed = time.perf_counter() - t_epoch
            rate = (i + 1) * per_rank * rt.world / elapsed if elapsed > 0 else 0.0
            rows.append([epoch + 1, state.step, round(state.nimg / 1000, 4), ld, lg, dr, df, round(rate, 2),
                         round(time.perf_counter() - t_start, 3)])
            if task is not None:
                progress.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs}  D {ld:.3f}  G {lg:.3f}  "
                                                      f"{rate:,.0f} img/s")
        state.epoch = epoch + 1
        rng_states = [ckpt.rng_state()]
        if rt.world > 1:
            rng_states = [None] * rt.world
            dist.all_gather_object(rng_states, ckpt.rng_state())
        if rt.main:
            _append_losses(out / "losses.csv", rows)
            sampler = ema if ema is not None else G
            _save_grid(out / f"grid-{state.epoch:06d}.png", sampler, fixed_z, fixed_y, classes, cfg, rt,
                       f"{cfg.recipe} recipe, epoch {state.epoch}, {state.nimg / 1000:.1f}k images shown")
            plot_losses(out / "losses.csv", out / "losses.png")
            payload = {
                "format": CHECKPOINT_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "config": _plain(asdict(cfg)), "args": _plain(call_args or {}), "model": model_desc,
                "dataset": identity, "epoch": state.epoch, "step": state.step, "nimg": state.nimg,
                "generator": G.state_dict(), "discriminator": D.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "rng": [_cpu(s) for s in rng_states], "data_gen": data_gen.get_state(),
                "fixed_z": fixed_z, "fixed_y": fixed_y, "world": rt.world,
            }
            if state.epoch % cfg.ckpt_every == 0 or state.epoch == cfg.epochs:
                ckpt.save(payload, out / f"ckpt-{state.epoch:06d}.pt")
                ckpt.prune(out, cfg.keep)
            ckpt.save(payload, last)
        if rt.world > 1:
            dist.barrier()
    seconds = time.perf_counter() - t_start
    result = {"epochs": state.epoch, "step": state.step, "kimg": state.nimg / 1000, "seconds": seconds,
              "img_per_s": (state.step - start_step) * per_rank * rt.world / seconds if seconds > 0 else 0.0,
              "data_fraction": data_seconds / seconds if seconds > 0 else 0.0,  # share of time fetching batches
              "out": str(out), "trained": True, "recipe": cfg.recipe, "cls": cfg.cls, "world": rt.world}
    if rt.main:
        write_json_atomic(summary_path, {**result, "config": _plain(asdict(cfg)), "dataset": identity})
    return result


def _note(text: str) -> None:
    from .cli import console
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


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None, device, batch: int = 256) -> np.ndarray:
    """uint8 (n, H, W) images from latents (3-channel output is averaged to gray)."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(z), batch):
        zb = z[i:i + batch].to(device)
        yb = y[i:i + batch].to(device) if y is not None else None
        x = G(zb, yb).float()
        out.append(to_uint8(x.mean(dim=1, keepdim=True)))
    G.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.uint8)


def _save_grid(path, G, z, y, classes, cfg: GanConfig, rt: Runtime, title: str) -> None:
    images = generate(G, z, y if cfg.conditional else None, rt.device)
    panels = {classes[c]: images[(y == c).numpy()] for c in sorted(set(y.tolist()))}
    save_grid(path, panels, title, cols=int(math.sqrt(cfg.grid)) if math.isqrt(cfg.grid) ** 2 == cfg.grid else 8)


def _append_losses(path: Path, rows: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(LOSS_COLUMNS)
        w.writerows(rows)


def _truncate_losses(path: Path, step: int) -> None:
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
