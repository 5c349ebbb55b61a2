"""The GAN checkpoint format (``cxrgan-gan/1``, docs/dataset-format.md): the files of a training folder, writing
and checking a checkpoint, and loading a generator from one for sampling."""

from __future__ import annotations

import datetime as _dt
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import torchfile
from ..errors import UserError
from .models import build_models, classes_generated

FORMAT = "cxrgan-gan/1"
EPOCH_FILE = re.compile(r"^ckpt-(\d{6})\.pt$")
# Options that must match to continue a run (the rest, e.g. --epochs or --ckpt-every, may change on resume).
RESUME_MUST_MATCH = ("recipe", "cls", "batch", "latent", "base", "channels", "loss", "augment", "g_steps",
                     "ada_target", "real_fraction", "subset_seed")
ADDED_LATER = {"real_fraction": 1.0, "subset_seed": 0}  # what checkpoints without these options were trained with
# Fault injection for tests: a process with this variable set to a file name is killed (SIGKILL) right after writing
# that file, e.g. between an epoch's ckpt-EEEEEE.pt and its last.pt.
KILL_AFTER_WRITING = "CXRGAN_KILL_AFTER_WRITING"


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
        if os.environ.get(KILL_AFTER_WRITING) == Path(path).name:
            os.kill(os.getpid(), signal.SIGKILL)


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
    saved = torchfile.load(path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise UserError(f"{path} is not a cxrgan GAN checkpoint; {hint}")
    return saved


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


@dataclass
class LoadedGenerator:
    path: Path
    generator: torch.nn.Module
    model: dict  # the checkpoint's model description (generative.models.model_description)
    weights: str  # "ema" or "generator"
    recipe: str
    epoch: int
    dataset: dict = field(default_factory=dict)  # the checkpoint's training data (generative.train.TrainingImages.identity)

    @property
    def classes_covered(self) -> list[int]:
        """The classes it generates: not one it saw no training image of (its weights for it are untrained)."""
        counts = self.dataset.get("class_counts")
        return [c for c in classes_generated(self.model) if counts is None or counts[c] > 0]


def load_generator(path: str | Path, device="cpu") -> LoadedGenerator:
    """The generator of a checkpoint, in eval mode on ``device``: its EMA weights when it has them."""
    saved = load(path)
    with torchfile.rebuilding(path, "GAN checkpoint"):
        G, _ = build_models(saved["model"])
        weights = "ema" if saved.get("ema") is not None else "generator"
        torchfile.check_finite(saved[weights], path, "GAN checkpoint")
        G.load_state_dict(saved[weights])
        return LoadedGenerator(Path(path), G.to(device).eval(), saved["model"], weights, saved["config"]["recipe"],
                               int(saved["epoch"]), dict(saved.get("dataset") or {}))
