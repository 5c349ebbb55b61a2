"""The checkpoint format of generative models (``cxrgan-generative/2``, docs/dataset-format.md): the files of a
training folder, writing and checking a checkpoint, continuing a run from one (``resume``), and loading the network
that generates for sampling. Checkpoints of the format before it (``cxrgan-gan/1``) load through ``upgrade``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from .. import torchfile
from ..cli import console
from ..errors import UserError
from ..faults import kill_point
from ..fileio import atomic_output
from .networks import NETWORKS, build, classes_generated
from .objectives import OBJECTIVES
from .recipes import Adversarial, canonical

FORMAT = "cxrgan-generative/2"
LEGACY_FORMAT = "cxrgan-gan/1"  # until 2026-12: GANs and diffusion models in a GAN's layout
EPOCH_FILE = re.compile(r"^ckpt-(\d{6})\.pt$")
# Options that must match to continue a run (the rest, e.g. --epochs or --ckpt-every, may change on resume).
RESUME_MUST_MATCH = ("recipe", "cls", "batch", "latent", "base", "channels", "loss", "augment", "g_steps",
                     "ada_target", "real_fraction", "subset_seed", "balance")
# what checkpoints without these options were trained with
ADDED_LATER = {"real_fraction": 1.0, "subset_seed": 0, "precision": "auto", "balance": False}


def epoch_path(folder: Path, epoch: int) -> Path:
    return folder / f"ckpt-{epoch:06d}.pt"


def epoch_checkpoints(folder: Path) -> list[Path]:
    """``ckpt-EEEEEE.pt`` files in ``folder``, oldest epoch first."""
    return sorted((p for p in folder.glob("ckpt-*.pt") if EPOCH_FILE.match(p.name)), key=lambda p: p.name)


def prune(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` epoch checkpoints (``last.pt`` is never removed)."""
    if keep > 0:
        for old in epoch_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)


def find_newest(root: str | Path) -> list[Path]:
    """All checkpoints under ``root`` (``last.pt`` and ``ckpt-*.pt``), newest first by modification time."""
    root = Path(root)
    found = [p for p in root.rglob("*.pt") if p.name == "last.pt" or EPOCH_FILE.match(p.name)] if root.is_dir() \
        else []
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name == "last.pt"), reverse=True)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def save(payload: dict, *paths: Path) -> None:
    """Write one checkpoint (stamped once) atomically to each path; ``payload`` holds tensors and plain values only
    (see the format doc)."""
    stamped = {"format": FORMAT, "created": now(), **payload}
    digest = torchfile.tensors_digest(stamped)  # once for every copy
    for path in paths:
        torchfile.save(stamped, path, digest)
        kill_point(f"wrote:{Path(path).name}")  # e.g. between an epoch's ckpt-EEEEEE.pt and its last.pt


def resumable(folder: Path) -> tuple[Path | None, dict | None, list[str]]:
    """The checkpoint a run in ``folder`` continues from: whichever of ``last.pt`` and the ``ckpt-EEEEEE.pt`` files
    holds the latest epoch and loads. An epoch's checkpoint is written before its ``last.pt``, so a process killed
    between the two leaves a ``ckpt-EEEEEE.pt`` newer than ``last.pt`` (or no ``last.pt`` at all, in the first
    epoch). Damaged files are passed over. Returns (path, checkpoint, why each passed-over file was refused);
    (None, None, reasons) when no checkpoint loads."""
    refused, found = [], None
    last = folder / "last.pt"
    if last.is_file():
        try:
            found = (last, load(last))
        except UserError as e:
            refused.append(str(e))
    for path in reversed(epoch_checkpoints(folder)):  # newest epoch first; only those newer than last.pt matter
        if found is not None and int(EPOCH_FILE.match(path.name).group(1)) <= found[1].get("epoch", 0):
            break
        try:
            found = (path, load(path))
            break
        except UserError as e:
            refused.append(str(e))
    return (*(found or (None, None)), refused)


def load(path: str | Path, hint: str = "train one with tools/train_dcgan.py") -> dict:
    """A checkpoint, checked (torchfile: digest, safe unpickling) and in this format (an older one upgraded)."""
    saved = torchfile.load(path)
    if isinstance(saved, dict) and saved.get("format") == LEGACY_FORMAT:
        return upgrade(saved, path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise UserError(f"{path} is not a cxrgan generative-model checkpoint; {hint}")
    return saved


ADVERSARIAL_PARTS = ("generator", "discriminator", "ema", "opt_g", "opt_d", "ada", "lecam")


def upgrade(saved: dict, path: str | Path) -> dict:
    """A ``cxrgan-gan/1`` checkpoint in this format. It held every model in a GAN's layout: a diffusion model's
    denoiser as the generator's ``denoiser.*`` weights beside an empty discriminator, and GAN options it did not use
    in its config; recipes by their old names."""
    model, config = dict(saved["model"]), dict(saved.get("config") or {})
    config["recipe"] = canonical(config.get("recipe"))
    rest = {k: v for k, v in saved.items() if k not in ADVERSARIAL_PARTS}
    if model["kind"] in ("edm", "ddpm"):
        def strip(weights):
            return None if weights is None else {k.removeprefix("denoiser."): v for k, v in weights.items()}
        model["formulation"] = model["kind"]
        config.update({key: None for key in Adversarial.options})
        parts = {"objective": "denoising", "networks": {"denoiser": strip(saved["generator"])},
                 "ema": strip(saved.get("ema")), "optimizers": {"denoiser": saved.get("opt_g")}, "objective_state": {}}
    elif model["kind"] in NETWORKS:
        parts = {"objective": "adversarial", "ema": saved.get("ema"),
                 "networks": {"generator": saved["generator"], "discriminator": saved["discriminator"]},
                 "optimizers": {"generator": saved.get("opt_g"), "discriminator": saved.get("opt_d")},
                 "objective_state": {"ada": saved.get("ada"), "lecam": saved.get("lecam")}}
    else:
        raise UserError(f"{path} holds {model['kind']!r} networks, which cxrgan no longer has; train a new model "
                        "with tools/train_dcgan.py")
    return {**rest, **parts, "format": FORMAT, "model": model, "config": config, "upgraded_from": LEGACY_FORMAT}


# Options that do not change what a run's first epochs compute: where and how it runs, how it keeps its files, and
# its length (a longer run continues a shorter one exactly; one trained past the length asked for starts over).
NOT_SHAPING = ("out", "device", "resume", "overwrite", "ckpt_every", "keep", "grid", "compile", "epochs", "kimg")


def settings_changed(saved: dict, config: dict) -> str:
    """The options (``--name old -> new``) whose values differ from the checkpoint's run; "" when none."""
    was = saved.get("config") or {}
    changed = [f"--{k.replace('_', '-')} {was.get(k, ADDED_LATER.get(k))!r} -> {v!r}" for k, v in config.items()
               if k not in NOT_SHAPING and was.get(k, ADDED_LATER.get(k)) != v]
    return ", ".join(changed)


def check_resumable(saved: dict, config: dict, dataset_sha256: str, path: Path) -> None:
    """Refuse to continue a run with different settings or different data."""
    was = saved["config"]
    for key in RESUME_MUST_MATCH:
        if was.get(key, ADDED_LATER.get(key)) != config[key]:
            raise UserError(f"{path} was trained with --{key.replace('_', '-')} {was.get(key)!r}, not "
                            f"{config[key]!r}: use another --out, or --resume=False to start over there")
    if saved["dataset"]["content_sha256"] != dataset_sha256:
        raise UserError(f"{path} was trained on different data ({saved['dataset']['path']}); use another --out, or "
                        "--resume=False to start over there")


# ----------------------------------------------------------------------------------------------------------------
# Continuing a run


@dataclass
class TrainState:
    """The counters of a run that go into its checkpoints."""

    epoch: int = 0  # completed epochs
    step: int = 0  # training steps (a GAN's: discriminator steps)
    nimg: int = 0  # real images shown, all processes
    best_kid: float | None = None  # --select-snapshot: the lowest validation KID so far, and when
    best_kimg: float | None = None
    new_best: bool = False  # the snapshot just taken is the best: write best.pt with this epoch's checkpoint
    objective_state: dict | None = None  # what the objective's step keeps (a GAN's ADA and LeCam state)


def resume(run) -> TrainState:
    """Continue from the newest checkpoint in ``run.out`` that loads (``last.pt``, or a ``ckpt-EEEEEE.pt`` written
    after it by a process killed before its ``last.pt``), restoring every RNG; otherwise clear out an earlier run.
    ``run`` is generative.train's Run (cfg, rt, out, nets, objective, data, data_gen)."""
    last, saved = _continuable(run)
    if run.rt.world > 1:  # every process has read last.pt before the main one may delete it (starting over)
        dist.barrier()
    state = _restore(run, last, saved) if saved is not None else _start_over(run)
    if run.rt.main:
        run.out.mkdir(parents=True, exist_ok=True)
        for history in (run.out / "losses.csv", run.out / "metrics.csv"):  # rows past the checkpoint are redone
            _truncate_rows(history, state.step)
    return state


def _continuable(run) -> tuple[Path | None, dict | None]:
    """The checkpoint to continue from, or (None, None): none loads, or --overwrite and it was made otherwise."""
    cfg, out, main = run.cfg, run.out, run.rt.main
    last, saved, refused = resumable(out) if cfg.resume else (None, None, [])
    if main:
        for reason in refused:
            _note(f"passed over: {reason}")
    if saved is None and refused:
        if not cfg.overwrite:
            raise UserError(f"{out} holds no checkpoint that loads ({refused[0]}); use another --out, or pass "
                            "--overwrite to start over there")
        if main:
            _note(f"no checkpoint in {out} loads, so the run there cannot be continued: starting over")
    if saved is not None and cfg.overwrite:  # a run made with other settings or data is replaced, not continued
        changed = settings_changed(saved, asdict(cfg))
        if (saved.get("dataset") or {}).get("content_sha256") != run.data.identity["content_sha256"]:
            changed = ", ".join(filter(None, [changed, "the training data"]))
        if saved.get("epoch", 0) > cfg.epochs:  # a longer run cannot be cut back to the length asked for
            changed = ", ".join(filter(None, [changed, f"trained to epoch {saved['epoch']}, past --epochs "
                                                       f"{cfg.epochs}"]))
        if changed:
            if main:
                _note(f"{last} was trained with other settings ({changed})")
            return None, None
    return last, saved


def _restore(run, last: Path, saved: dict) -> TrainState:
    cfg, nets, rt = run.cfg, run.nets, run.rt
    with torchfile.rebuilding(last, "checkpoint"):
        check_resumable(saved, asdict(cfg), run.data.identity["content_sha256"], last)
        for part, module in nets.modules.items():
            torchfile.check_finite(saved["networks"][part], last, "checkpoint")
            module.load_state_dict(saved["networks"][part])
        if nets.ema is not None:  # a run that had no EMA starts one from the network it averages
            nets.ema.load_state_dict(saved["ema"] if saved.get("ema") is not None
                                     else saved["networks"][run.objective.sampled])
        rates = run.objective.learning_rates(cfg)
        for part, opt in nets.optimizers.items():
            opt.load_state_dict(saved["optimizers"][part])
            for group in opt.param_groups:  # the saved state carries the old run's rates and betas: this run's
                group["lr"], group["betas"] = rates[part], (cfg.beta1, cfg.beta2)
        best = saved.get("snapshot_best") or {}
        state = TrainState(saved["epoch"], saved["step"], saved["nimg"], best.get("kid"), best.get("kimg"),
                           objective_state=saved.get("objective_state"))
        run.data_gen.set_state(saved["data_gen"])
        rng = saved["rng"]
    if len(rng) == rt.world:
        torchfile.set_rng_state(rng[rt.rank])
    elif rt.main:
        _note(f"resuming with {rt.world} processes from a {len(rng)}-process checkpoint: random streams are "
              "reseeded, so the continuation is not bit-identical")
    if rt.main:
        _note(f"resuming {last} at epoch {state.epoch} (step {state.step})")
        if last != run.out / "last.pt":  # last.pt is older or absent: what sampling reads must be this checkpoint
            with atomic_output(run.out / "last.pt") as tmp:
                shutil.copyfile(last, tmp)
    return state


def _start_over(run) -> TrainState:
    out = run.out
    earlier = (out / "last.pt").is_file() or epoch_checkpoints(out)
    if earlier and not run.cfg.overwrite:
        raise UserError(f"{out} holds an earlier run; continue it (--resume, the default), or pass --overwrite "
                        "to delete it and start over, or choose another --out")
    if run.rt.main and earlier:
        _note(f"starting over in {out}: removing its earlier checkpoints, grids, loss and metric history")
        for old in [out / "last.pt", *epoch_checkpoints(out), *out.glob("grid-*.png"),
                    out / "losses.csv", out / "metrics.csv", out / "best.pt"]:
            old.unlink(missing_ok=True)
    return TrainState()


def _note(text: str) -> None:
    console.print(f"[cyan]note:[/] {text}")


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


# ----------------------------------------------------------------------------------------------------------------
# Loading the network that generates, for sampling


@dataclass
class LoadedGenerator:
    """The network that generates, from a checkpoint (its EMA weights when it has them), and how to sample it."""

    path: Path
    network: torch.nn.Module  # a GAN's generator, a diffusion model's denoiser; in eval mode
    model: dict  # the checkpoint's model description (generative.networks.model_description)
    objective: str  # a row of generative.objectives.OBJECTIVES
    weights: str  # "ema", or the part's own weights ("generator", "denoiser")
    recipe: str
    epoch: int
    dataset: dict = field(default_factory=dict)  # the checkpoint's training data (generative.train.TrainingImages)

    @property
    def classes_covered(self) -> list[int]:
        """The classes it generates: not one it saw no training image of (its weights for it are untrained)."""
        counts = self.dataset.get("class_counts")
        return [c for c in classes_generated(self.model) if counts is None or counts[c] > 0]

    def sampler(self, steps: int | None = None, guidance: float = 1.0, solver: str | None = None,
                channels_last: bool = False):
        """(z, labels) -> images in [-1, 1]; the settings apply to objectives that have a sampler (diffusion)."""
        return OBJECTIVES[self.objective].sampler(self.network, self.model, steps, guidance, solver, channels_last)

    def sampler_record(self, steps: int | None, guidance: float, solver: str | None):
        return OBJECTIVES[self.objective].sampler_record(self.network, self.model, steps, guidance, solver)


def load_generator(path: str | Path, device="cpu") -> LoadedGenerator:
    """The network that generates of a checkpoint, in eval mode on ``device``: its EMA weights when it has them."""
    saved = load(path)
    objective = OBJECTIVES[saved["objective"]]
    with torchfile.rebuilding(path, "checkpoint"):
        network = build(saved["model"])[objective.sampled]
        weights = "ema" if saved.get("ema") is not None else objective.sampled
        state = saved["ema"] if weights == "ema" else saved["networks"][objective.sampled]
        torchfile.check_finite(state, path, "checkpoint")
        network.load_state_dict(state)
        return LoadedGenerator(Path(path), network.to(device).eval(), saved["model"], saved["objective"], weights,
                               saved["config"]["recipe"], int(saved["epoch"]), dict(saved.get("dataset") or {}))
