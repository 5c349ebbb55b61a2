"""Feature networks for image-set metrics, feature extraction over a dataset split, and the on-disk feature cache.

The networks are the rows of ``FEATURE_NETS`` (``networks.py``; a new one is a row there and its module):
- ``inception``: the FID Inception (``inception.py``); 2048-d pool features plus ImageNet logits (for IS);
- ``xrv[:WEIGHTS]``: torchxrayvision's chest X-ray DenseNet-121 (``xrv.py``), 1024-d: the FID_xrv of the CXR
  generation literature;
- ``classifier:CKPT``: the penultimate layer (after global average pooling; 512-d for the default ResNet-18) of
  a classifier saved by train_resnet. Trained on chest X-rays, it gives a domain-specific FID/KID that needs no
  downloaded weights; it has no ImageNet classes, so no Inception Score.

Features of a dataset split are cached on disk, keyed by the file's content hash (``content_sha256``, a hash of
its images and labels), the split and the network's weights, so a real test set is processed once however many
generators are scored against it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import runtime
from ..cli import Task, ignore
from ..classify import model as classifier
from ..data.reader import H5ImageDataset, to_model_input
from ..errors import UserError
from ..fileio import atomic_output, sha256_file
from . import networks
from .networks import FEATURE_NETS


@dataclass
class FeatureNet:
    name: str  # a row of FEATURE_NETS: "inception", "xrv" or "classifier"
    key: str  # identifies the weights, for caches
    model: nn.Module
    device: torch.device
    prepare: Callable[[torch.Tensor], torch.Tensor]  # uint8 (n, H, W) on device -> network input
    has_logits: bool
    description: str

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (n, H, W) -> features (n, d) float32 and, for Inception, logits (n, 1008)."""
        x = self.prepare(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
        out = self.model(x)
        if self.has_logits:
            return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
        return out.float().cpu().numpy(), None


def feature_net(spec: str = "inception", inception_weights: str | None = None, device: str = "auto") -> FeatureNet:
    """``NAME[:ARGUMENT]``, NAME a row of ``FEATURE_NETS``: ``inception``, ``xrv[:WEIGHTS]``, ``classifier:CKPT``."""
    name, sep, argument = str(spec).partition(":")
    row = FEATURE_NETS.get(name)
    if row is None or ((sep or argument) and not row.argument) or (row.argument_required and not argument):
        raise UserError(f"--features {spec!r}: use {networks.usages()}")
    dev = runtime.resolve_device(device)
    model, key, prepare, description = row.build(argument, inception_weights, dev)
    return FeatureNet(name, f"{name}-{key}", model, dev, prepare, row.has_logits, description)


def classifier_backbone(ckpt: str, weights: str | None, device: torch.device) -> tuple:
    """The ``classifier:CKPT`` row of ``FEATURE_NETS``: a train_resnet model's penultimate layer (``weights``,
    Inception's, is not used)."""
    model, meta = classifier.load(ckpt)
    size = int(meta["size"])
    with torch.no_grad():
        dim = model.penultimate(torch.zeros(1, meta["channels"], size, size)).shape[1]

    def prepare(x):
        return classifier.resize(to_model_input(x), size)

    title = classifier.BACKBONES[meta["arch"]].title
    return (_Penultimate(model).to(device).eval(), sha256_file(ckpt)[:16], prepare,
            f"{title} penultimate layer, {dim}-d ({ckpt}, input {size}x{size})")


class _Penultimate(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.penultimate(x)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cxrgan" / "features"


def extract(net: FeatureNet, ds: H5ImageDataset, batch: int = 64, task: Task = ignore) -> tuple[np.ndarray, np.ndarray]:
    """Features (and logits, or an empty array) of every image of a split, in file order."""
    feats, logits = [], []
    for i in range(0, len(ds), batch):
        f, lg = net(ds.read_uint8(np.arange(i, min(i + batch, len(ds)))))
        feats.append(f)
        if lg is not None:
            logits.append(lg)
        task(min(batch, len(ds) - i))
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
            np.concatenate(logits) if logits else np.zeros((len(ds), 0), np.float32))


def cached_features(net: FeatureNet, ds: H5ImageDataset, cache_dir: str | Path | None, batch: int = 64,
                    task: Task = ignore) -> tuple[np.ndarray, np.ndarray, bool]:
    """``extract`` through the cache: (features, logits, hit); on a hit the task is completed at once.
    ``cache_dir=None`` disables the cache."""
    content = ds.info.attrs.get("content_sha256", "")
    if cache_dir is None or not content:
        return (*extract(net, ds, batch, task), False)
    names_hash = hashlib.sha256("\n".join(ds.names).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{content[:24]}-{ds.split}-{names_hash}-{net.key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                if len(z["features"]) == len(ds):
                    task(len(ds))
                    return z["features"], z["logits"], True
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: recompute and overwrite
    feats, logits = extract(net, ds, batch, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=feats, logits=logits)
    return feats, logits, False
