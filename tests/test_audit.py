import numpy as np

from cxrgan.metrics.audit import audit_space, closest_pairs_figure, nearest, pixel_vectors


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
