"""Metric arithmetic against closed forms and naive reference implementations."""

import numpy as np
import pytest

from cxrgan.metrics.scores import fid, frechet_distance, inception_score, kid, moments, precision_recall


def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(fid(x, x)) < 1e-6


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_fid_of_shifted_gaussian_samples_approaches_the_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + 0.5
    assert fid(a, b) == pytest.approx(4 * 0.25, abs=0.03)


def _naive_mmd2(x, y, d):
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_a_naive_unbiased_mmd():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.3
    mean, std = kid(real, fake, subsets=1, subset_size=12)  # one subset holding everything
    assert std == 0 and mean == pytest.approx(_naive_mmd2(fake, real, 5), rel=1e-10)


def test_kid_precomputed_kernels_equal_per_subset_kernels():
    # the fast path (full kernel matrices computed once) and the memory-bounded path (three products per subset)
    # must draw the same subsets and give the same numbers
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(90, 7)), rng.normal(size=(70, 7)) + 0.2
    fast = kid(real, fake, subsets=15, subset_size=40, seed=5)
    slow = kid(real, fake, subsets=15, subset_size=40, seed=5, max_kernel_elements=0)
    assert fast == pytest.approx(slow, rel=1e-12)
    assert fast != kid(real, fake, subsets=15, subset_size=40, seed=6)  # the seed picks the subsets


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    assert abs(kid(a, b, subsets=20, subset_size=300)[0]) < 0.02
    assert kid(a, b + 1.0, subsets=20, subset_size=300)[0] > 0.5


def _kid_closed_form(d: int, delta: float) -> float:
    """MMD^2 of N(0, I) and N(delta * 1, I) under k(x, y) = (x.y / d + 1)^3, from the moments of u = x.y, a sum of
    d independent products of normals (cumulants add)."""
    def mean_kernel(m1, m2, m3):  # raw moments of one product x_i * y_i
        k1, k2, k3 = d * m1, d * (m2 - m1 ** 2), d * (m3 - 3 * m2 * m1 + 2 * m1 ** 3)
        eu, eu2, eu3 = k1, k2 + k1 ** 2, k3 + 3 * k2 * k1 + k1 ** 3
        return eu3 / d ** 3 + 3 * eu2 / d ** 2 + 3 * eu / d + 1

    k_xx = mean_kernel(0, 1, 0)
    k_yy = mean_kernel(delta ** 2, (1 + delta ** 2) ** 2, (delta ** 3 + 3 * delta) ** 2)
    k_xy = mean_kernel(0, 1 + delta ** 2, 0)
    return k_xx + k_yy - 2 * k_xy


@pytest.mark.parametrize("delta", [0.3, 0.6])
def test_kid_of_shifted_gaussians_matches_the_closed_form(delta):
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8)) + delta
    assert kid(real, fake, subsets=50, subset_size=1000)[0] == pytest.approx(_kid_closed_form(8, delta), rel=0.1)


def test_inception_score_of_one_hot_predictions():
    eye = np.eye(10) * 100.0  # logits of confident, one-hot predictions
    assert inception_score(np.tile(eye, (20, 1)), splits=10)[0] == pytest.approx(10.0)
    same = np.tile(eye[:1], (200, 1))
    assert inception_score(same, splits=10) == (pytest.approx(1.0), pytest.approx(0.0))


def test_inception_score_splits_and_shuffle():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(103, 7)) * 3
    perm = np.random.RandomState(11).permutation(103)
    assert inception_score(logits, seed=11) == inception_score(logits[perm])
    # two classes, half the images certain of each: every split that holds both halves scores 2
    two = np.repeat(np.array([[50.0, 0.0], [0.0, 50.0]]), 50, axis=0)
    assert inception_score(two, splits=1)[0] == pytest.approx(2.0)
    assert inception_score(two, splits=2)[0] == pytest.approx(1.0)  # consecutive parts: one class each


def test_precision_recall():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(400, 2))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    far = rng.normal(size=(400, 2)) + 20
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = np.zeros((400, 2)) + rng.normal(scale=1e-3, size=(400, 2))  # all generated at the mode
    p, r = precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.2  # sharp but no diversity


def test_moments_shape():
    mu, sigma = moments(np.ones((5, 3)))
    assert mu.shape == (3,) and sigma.shape == (3, 3)


def test_pixel_diversity_is_about_one_for_a_fresh_sample_and_low_for_a_collapsed_generator():
    from cxrgan.metrics.evaluate import ImageSets, QualityConfig, set_metrics
    from cxrgan.metrics.scores import median_pairwise_distance

    rng = np.random.default_rng(0)
    real, same_kind = rng.random((300, 64)), rng.random((300, 64))
    collapsed = real[:1] + rng.normal(0, 0.01, (300, 64))  # one image, slightly jittered
    assert median_pairwise_distance(np.repeat(real[:1], 5, axis=0)) == 0.0
    cfg = QualityConfig(real="r.h5", kid_subsets=5, kid_subset_size=50)

    def diversity(fake):
        return set_metrics(ImageSets(real, fake, np.zeros((300, 0)), np.zeros((300, 0)), real, fake), cfg)[
            "pixel_diversity"]

    assert 0.95 < diversity(same_kind) < 1.05
    assert diversity(collapsed) < 0.05
    # subsampling large sets is seeded: the same seed gives the same spread
    big = rng.random((1500, 16))
    assert median_pairwise_distance(big, seed=1) == median_pairwise_distance(big, seed=1)
