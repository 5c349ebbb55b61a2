"""bench/common.py's sliced Wasserstein distance, which the GAN experiments rank recipes by (not a fid_is metric)."""

import sys

import numpy as np
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from common import laplacian_pyramid, swd  # noqa: E402


def test_pyramid_has_one_band_per_level():
    x = torch.rand(2, 1, 32, 32)
    bands = laplacian_pyramid(x, 3)
    assert [b.shape[-1] for b in bands] == [32, 16, 8]


def test_swd_orders_sets_by_difference():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 32, 32))
    real = np.clip(base + rng.normal(0, 20, (200, 32, 32)), 0, 255).astype(np.uint8)
    same = np.clip(base + rng.normal(0, 20, (200, 32, 32)), 0, 255).astype(np.uint8)
    noisier = np.clip(base + rng.normal(0, 60, (200, 32, 32)), 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, (200, 32, 32)).astype(np.uint8)
    a, b, c = (swd(real, s, patches_per_image=16, projections=64, repeats=1)["swd_mean"]
               for s in (same, noisier, other))
    assert a < b < c


def test_swd_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    x, y = (rng.integers(0, 256, (50, 32, 32)).astype(np.uint8) for _ in range(2))
    kw = dict(patches_per_image=16, projections=64, repeats=1, seed=3)
    assert swd(x, y, **kw) == swd(x, y, **kw)
