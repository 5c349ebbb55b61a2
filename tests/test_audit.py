import numpy as np
import pytest

from cxrgan.data.phantoms import generate
from cxrgan.data.reader import H5ImageDataset
from cxrgan.data.pixels import pixel_images, shifted_nearest
from cxrgan.metrics.audit import audit_space, closest_pairs_figure, default_max_shift, nearest, pixel_vectors


@pytest.fixture(scope="module")
def phantoms64(tmp_path_factory):
    """Training, held-out (val + test) and fresh (another seed's) phantom images at 64x64."""
    root = tmp_path_factory.mktemp("audit")
    generate(root / "a.h5", n=200, size=64, seed=1)
    generate(root / "b.h5", n=60, size=64, seed=2)
    train = H5ImageDataset(root / "a.h5", "train", in_memory=True).images
    held = np.concatenate([H5ImageDataset(root / "a.h5", s, in_memory=True).images for s in ("val", "test")])
    return train, held, H5ImageDataset(root / "b.h5", "train", in_memory=True).images


def _images(rng, n, side=32):
    return rng.integers(0, 256, (n, side, side), dtype=np.uint8)


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    d, i = nearest(q, r, chunk=3)
    brute = np.linalg.norm(q[:, None] - r[None], axis=2)
    assert np.array_equal(i, brute.argmin(1)) and np.allclose(d, brute.min(1), atol=1e-5)


def test_copies_are_found_and_fresh_images_are_not(tmp_path):
    rng = np.random.default_rng(1)
    train, test = _images(rng, 60), _images(rng, 40)
    fresh = _images(rng, 30)
    copies = np.concatenate([fresh[:27], train[[3, 17, 42]]])  # three memorised training images
    v = pixel_vectors
    clean = audit_space(v(fresh), v(train), v(test))
    leaky = audit_space(v(copies), v(train), v(test))
    assert clean["near_copies"] == 0
    assert leaky["near_copies"] == 3 and set(leaky["nearest_train"][27:]) == {3, 17, 42}
    closest_pairs_figure(tmp_path / "pairs.png", copies, train, leaky, k=4)
    assert (tmp_path / "pairs.png").stat().st_size > 1000


def test_pixel_vectors_downsample_large_images():
    x = np.zeros((2, 256, 256), np.uint8)
    assert pixel_vectors(x).shape == (2, 64 * 64)


def _shifted(images, dy, dx):
    """Move images by (dy, dx) pixels, filling the uncovered border with the image's edge values."""
    s = images.shape[-1]
    padded = np.pad(images, ((0, 0), (abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    return padded[:, abs(dy) - dy:abs(dy) - dy + s, abs(dx) - dx:abs(dx) - dx + s]


def test_shifted_copies_are_flagged_and_fresh_images_are_not(phantoms64):
    """The audit's finding: copies moved by 2 or 4 px escaped a pixel-by-pixel distance. At 64x64 the
    shift-tolerant distance flags at least 90% of them, and fresh images about as often as held-out real ones."""
    train, held_out, fresh = phantoms64
    rng = np.random.default_rng(3)
    pick = rng.choice(len(train), 40, replace=False)
    moves = [(2, 0), (0, -2), (2, 2), (-4, 0), (0, 4), (4, -4), (-2, 4), (-4, -2)]
    copies = np.concatenate([_shifted(train[pick[i::8]], *m) for i, m in enumerate(moves)])
    side = train.shape[-1]
    px = [pixel_images(x) for x in (copies, train, held_out, fresh)]
    shifted = audit_space(px[0], px[1], px[2], max_shift=default_max_shift(side))
    assert shifted["near_copies"] >= 0.9 * len(copies)
    plain = audit_space(*(x.reshape(len(x), -1) for x in px[:3]))  # the old pixel-by-pixel distance misses most
    assert plain["near_copies"] < shifted["near_copies"]
    clean = audit_space(px[3], px[1], px[2], max_shift=default_max_shift(side))
    assert clean["near_copies"] <= max(3, 0.05 * len(fresh))
    lo, hi = clean["near_copy_threshold_ci95"]
    assert lo <= clean["near_copy_threshold"] <= hi and clean["near_copies_ci95"][0] <= clean["near_copies_ci95"][1]


def test_shifted_nearest_finds_the_translation():
    rng = np.random.default_rng(4)
    ref = rng.random((5, 24, 24)).astype(np.float32)
    query = _shifted(ref[[2]], 3, -1)
    d, i, shift = shifted_nearest(query, ref, max_shift=3)
    assert i[0] == 2 and d[0] < 1e-6 and tuple(shift[0]) == (3, -1)
