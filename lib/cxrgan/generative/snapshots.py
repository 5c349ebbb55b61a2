"""Metric snapshots during GAN training (train_dcgan ``--snapshot-kimg``), as stylegan2-ada's ``--metrics``.

Every N thousand images shown, the generator being trained (its EMA when it has one) makes a fixed set of images
(the same latents every time) with the real *validation* split's class mix, and one row goes to ``metrics.csv``:

- ``kid``, ``precision``, ``recall`` against the validation images, in the space of ``--snapshot-features``
  (``cxr:PATH``, make features: chest X-ray features; ``classifier:CKPT``, a train_resnet model; or ``inception``);
  empty without features;
- ``pixel_diversity``: median pairwise pixel distance among the generated images over the same among the
  validation images (feature-free; a collapsed generator scores far below 1);
- what the objective adds (``objectives``: its ``snapshot_columns``). A GAN adds the discriminator's view, without
  augmentation: mean logit on training images (``d_train``), on validation images it never saw (``d_val``) and on
  generated ones (``d_fake``), and the share of positive logits on training and validation images (``rt_train``,
  ``rt_val``; ADA's overfitting heuristic). A discriminator that memorises the training images scores them far
  above unseen real ones: ``d_train`` pulls away from ``d_val``.

The validation split is used, never test, so ``--select-snapshot`` (keep the snapshot with the lowest KID as
``best.pt``) does not peek at the images the final numbers are computed on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..data.reader import H5ImageDataset
from ..metrics.audit import pixel_vectors
from ..metrics.evaluate import ImageSets, QualityConfig, set_metrics, snapshot_columns
from .networks import Sampler, generate

FIRST_COLUMNS = ["epoch", "step", "kimg", *(column for column, _ in snapshot_columns())]  # SET_METRICS' rows
LAST_COLUMNS = ["n_fake", "n_val"]
D_IMAGES = 256  # real training / validation / generated images the discriminator statistics are taken over


def columns(objective_columns=()) -> list[str]:
    """metrics.csv's columns: the common ones with the objective's (``snapshot_columns``) before the counts."""
    return [*FIRST_COLUMNS, *objective_columns, *LAST_COLUMNS]


class Snapshots:
    """Measures a generator/discriminator pair against the validation split; holds what does not change."""

    def __init__(self, data: str, cls: int | None, n: int, features: str | None, seed: int, train_images: torch.Tensor,
                 train_labels: torch.Tensor, device, batch: int = 256):
        val = H5ImageDataset(data, "val", in_memory=True)
        keep = np.ones(len(val), bool) if cls is None else val.labels == cls
        self.val_images, self.val_labels = val.images[keep], val.labels[keep]
        if len(self.val_images) < 2:
            raise ValueError(f"the validation split of {data} has {len(self.val_images)} image(s)"
                             f"{'' if cls is None else f' of class {cls}'}; snapshots need at least 2")
        self.device, self.batch, self.d_images = device, batch, D_IMAGES
        classes, counts = np.unique(self.val_labels, return_counts=True)
        per_class = np.floor(n * counts / counts.sum()).astype(int)
        per_class[: n - per_class.sum()] += 1  # the rounding remainder, so the counts add up to n
        self.labels = torch.from_numpy(np.repeat(classes, per_class)).long()  # the generated images' classes
        self.seed = seed
        self._z = None  # the same latents at every snapshot, drawn on first use (when the latent size is known)
        self.side = min(64, self.val_images.shape[-1])
        self.val_pixels = pixel_vectors(self.val_images, self.side)
        pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(
            len(train_images), min(D_IMAGES, len(train_images)), replace=False)))
        self.d_train_images, self.d_train_labels = train_images[pick], train_labels[pick]
        self.d_val_images = torch.from_numpy(self.val_images[:D_IMAGES])
        self.d_val_labels = torch.from_numpy(self.val_labels[:D_IMAGES])
        self.net = None
        if features:
            from ..metrics.features import feature_net  # only when asked: Inception needs its weights
            self.net = feature_net(features, device=str(device))
            self.val_features = self._features(self.val_images)
        self.metric_cfg = QualityConfig(real="", kid_subsets=50, kid_subset_size=1000, seed=seed)

    def _features(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.net(images[i:i + 64])[0] for i in range(0, len(images), 64)])

    def latents(self, dim: int) -> torch.Tensor:
        if self._z is None:  # its own generator: snapshots never touch the training's random streams
            self._z = torch.randn(len(self.labels), dim, generator=torch.Generator().manual_seed(self.seed * 7919 + 17))
        return self._z

    def measure(self, network: torch.nn.Module, sampler: Sampler, latent: int) -> dict:
        """The common columns of a metrics.csv row (without the counters), for images ``sampler`` makes with
        ``network``; the images themselves under ``images`` (for the objective's columns)."""
        fake = generate(network, sampler, self.latents(latent), self.labels, self.device, self.batch)
        row = {"n_fake": len(fake), "n_val": len(self.val_images), "images": fake}
        fake_pixels = pixel_vectors(fake, self.side)
        empty = np.zeros((0, 0))
        if self.net is not None:
            fake_features = self._features(fake)
            sets = ImageSets(self.val_features, fake_features, empty, empty, self.val_pixels, fake_pixels)
        else:  # no features: the pixel row only
            sets = ImageSets(self.val_pixels, fake_pixels, empty, empty, self.val_pixels, fake_pixels)
        m = set_metrics(sets, self.metric_cfg)
        row.update({column: m[key] for column, key in snapshot_columns(with_features=self.net is not None)})
        return row


def append(path: Path, row: dict, objective_columns=()) -> None:
    """One row of ``metrics.csv`` (the header first when the file is new); missing values stay empty."""
    new, names = not path.exists(), columns(objective_columns)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, names)
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in names})


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
