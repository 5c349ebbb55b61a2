"""Classifier statistics against brute-force and textbook references."""

import itertools

import numpy as np
import pytest

from cxrgan.classify.stats import (METRICS, _arm_components, _group_index, _resampled_auroc, _seed_aware, auroc,
                                   binary_metrics, bootstrap_ci, bootstrap_p, df_of_test_images, mcnemar, over_seeds,
                                   paired_bootstrap_auroc, plug_in_correction, resampled_metrics)


def _brute_auroc(y, s):
    pairs = [(p, n) for p, n in itertools.product(np.flatnonzero(y), np.flatnonzero(~y))]
    return np.mean([1.0 if s[p] > s[n] else 0.5 if s[p] == s[n] else 0.0 for p, n in pairs])


def test_auroc_equals_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    s = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes ties
    assert auroc(y, s) == pytest.approx(_brute_auroc(y, s), abs=1e-12)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0 and auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5


def test_binary_metrics():
    m = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.1, 0.7])
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == 0.5
    assert m["accuracy"] == 0.6 and m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)


def test_bootstrap_ci_contains_the_estimate_narrows_with_n_and_is_reproducible():
    rng = np.random.default_rng(1)

    def data(n):
        y = np.arange(n) % 2 == 1
        return y, rng.random(n) * 0.8 + 0.4 * y

    y, s = data(100)
    ci = bootstrap_ci(y, s, n_boot=500, seed=3)
    point = binary_metrics(y, s)
    for k, c in ci.items():
        assert c["ci95"] == c["ci95_test_images_only"] and not c["seed_aware"]  # one run: nothing else to count
        assert c["ci95"][0] <= point[k] <= c["ci95"][1]
    assert ci == bootstrap_ci(y, s, n_boot=500, seed=3)
    y2, s2 = data(2000)
    wide, narrow = ci["auroc"]["ci95"], bootstrap_ci(y2, s2, n_boot=500, seed=3)["auroc"]["ci95"]
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(2)
    y = np.arange(400) % 2 == 1
    a = rng.random(400) + 0.2 * y
    b = rng.random(400) + 1.0 * y
    same = paired_bootstrap_auroc(y, a, a, n_boot=300)
    assert same["delta_auroc"] == 0 and same["p_value"] == 1.0
    diff = paired_bootstrap_auroc(y, a, b, n_boot=300)
    assert diff["delta_auroc"] > 0.2 and diff["ci95"][0] > 0 and diff["p_value"] < 0.01


def test_mcnemar_exact_matches_the_binomial():
    y = np.ones(30, bool)
    pred_a = np.array([1] * 18 + [0] * 12, bool)  # a right on 18
    pred_b = np.array([1] * 6 + [0] * 12 + [1] * 2 + [0] * 10, bool)  # b right on 6 of those and 2 others
    r = mcnemar(y, pred_a, pred_b)
    assert (r["only_a_correct"], r["only_b_correct"]) == (12, 2)
    from scipy.stats import binom
    assert r["p_value"] == pytest.approx(2 * binom.cdf(2, 14, 0.5))
    assert mcnemar(y, pred_a, pred_a)["p_value"] == 1.0


def test_over_seeds_t_interval():
    r = over_seeds([0.70, 0.72, 0.74])
    assert r["mean"] == pytest.approx(0.72) and r["sd"] == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / np.sqrt(3)  # t(0.975, 2)
    assert r["ci95"] == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))


def test_paired_difference_over_several_runs_is_the_difference_of_mean_aurocs():
    rng = np.random.default_rng(5)
    y = np.arange(200) % 2 == 1
    a = rng.random((3, 200)) + 0.3 * y
    b = rng.random((3, 200)) + 0.6 * y
    r = paired_bootstrap_auroc(y, a, b, n_boot=100)
    expected = np.mean([auroc(y, s) for s in b]) - np.mean([auroc(y, s) for s in a])
    assert r["delta_auroc"] == pytest.approx(expected)


def _simulated_arm(rng, y, difficulty, runs, run_sd):
    """Scores of ``runs`` training runs of one method: each run's skill varies (sd ``run_sd``), images share a
    difficulty across all models, and each model has its own noise on each image."""
    skill = rng.normal(1.0, run_sd, (runs, 1))
    logit = skill * np.where(y, 1, -1) + difficulty + rng.normal(0, 1, (runs, len(y)))
    return 1 / (1 + np.exp(-logit))


def _simulated_test_set(rng, n):
    y = np.zeros(n, bool)
    y[: int(0.3 * n)] = True
    return y, rng.normal(0, 1, n)


def test_vectorised_resampled_metrics_match_binary_metrics():
    rng = np.random.default_rng(7)
    y, d = _simulated_test_set(rng, 50)
    s = np.round(_simulated_arm(rng, y, d, 3, 0.3), 2)  # ties
    boot = resampled_metrics(y, [s], n_boot=5, seed=1)[0]
    # replay the same resamples: positives first, then negatives, as resampled_metrics draws them
    r = np.random.default_rng(1)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    idx = np.concatenate([r.choice(pos, (5, len(pos))), r.choice(neg, (5, len(neg)))], axis=1)
    for b in range(5):
        for run in range(3):
            m = binary_metrics(y[idx[b]], s[run, idx[b]])
            for k in METRICS:
                assert boot[k][b, run] == pytest.approx(m[k])


def test_resampled_auroc_from_counts_equals_the_ranks_bit_for_bit():
    """paired_bootstrap_auroc's fast bootstrap AUROC: the same resamples and the same numbers as resampled_metrics,
    with and without tied scores (within a run, across classes), over several chunks of resamples."""
    rng = np.random.default_rng(8)
    y, d = _simulated_test_set(rng, 70)
    smooth = _simulated_arm(rng, y, d, 4, 0.3)
    tied = np.round(smooth, 1)
    tied[1] = 0.5  # a run scoring every image the same: AUROC 1/2 on every resample
    for arms in ([smooth, tied], [smooth[:1]], [tied[2:]]):
        fast = _resampled_auroc(y, arms, n_boot=450, seed=3)
        ranks = resampled_metrics(y, arms, n_boot=450, seed=3)
        for f, r in zip(fast, ranks):
            assert f.shape == r["auroc"].shape and np.array_equal(f, r["auroc"]) and f.flags["C_CONTIGUOUS"]
    assert np.all(_resampled_auroc(y, [tied], 50, 0)[0][:, 1] == 0.5)
    with_nan = smooth.copy()
    with_nan[0, 3] = np.nan
    fallback = _resampled_auroc(y, [with_nan], 50, 0)[0]  # (NaN where a resample holds the NaN image)
    assert np.isnan(fallback).any() and np.array_equal(fallback, resampled_metrics(y, [with_nan], 50, 0)[0]["auroc"],
                                                       equal_nan=True)


def test_bootstrap_p_is_never_zero():
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.zeros(10)) == 1.0


def test_null_simulation_false_positive_rate_is_near_five_percent():
    """Both arms are the same training method (5 runs each, runs differing in skill as real seeds do): the verdict's
    interval must exclude 0 in about 5% of repeats. The test-images-only interval, which treats the trained models
    as fixed, does so far more often; that was the old verdict."""
    rng = np.random.default_rng(2026)
    repeats, seed_aware, fixed = 200, 0, 0
    for r in range(repeats):
        y, d = _simulated_test_set(rng, 90)
        a, b = _simulated_arm(rng, y, d, 5, 0.35), _simulated_arm(rng, y, d, 5, 0.35)
        p = paired_bootstrap_auroc(y, a, b, n_boot=200, seed=r)
        assert p["seed_aware"] and p["p_value"] > 0
        seed_aware += not p["ci95"][0] <= 0 <= p["ci95"][1]
        fixed += not p["ci95_test_images_only"][0] <= 0 <= p["ci95_test_images_only"][1]
    assert 0.01 <= seed_aware / repeats <= 0.10
    assert fixed / repeats > 0.25


def test_seed_mean_interval_covers_the_methods_expected_auroc():
    rng = np.random.default_rng(11)
    y_big, d_big = _simulated_test_set(rng, 20000)
    truth = np.mean([auroc(y_big, s) for s in _simulated_arm(rng, y_big, d_big, 200, 0.35)])
    repeats, covered, covered_fixed = 120, 0, 0
    for r in range(repeats):
        y, d = _simulated_test_set(rng, 150)
        ci = bootstrap_ci(y, _simulated_arm(rng, y, d, 5, 0.35), n_boot=200, seed=r)["auroc"]
        covered += ci["ci95"][0] <= truth <= ci["ci95"][1]
        covered_fixed += ci["ci95_test_images_only"][0] <= truth <= ci["ci95_test_images_only"][1]
    assert covered / repeats >= 0.88
    assert covered_fixed / repeats < covered / repeats


def test_runs_that_agree_exactly_are_not_certainty():
    """Every run of each arm has the same AUROC (issue 24): the standard error used to be 0, the interval a point
    and p = 0. The model x image share subtracted from the test-image variance is capped by the runs' spread (0
    here), so the test-image variance stays; with nothing left at all, the test-image bootstrap answers."""
    y = [1, 1, 1, 0, 0, 0]
    a = [[5, 4, 3, 0, 1, 2], [4, 5, 3, 1, 0, 2]]
    b = [[2, 1, 3, 5, 0, 4], [1, 2, 3, 0, 5, 4]]
    r = paired_bootstrap_auroc(y, a, b, n_boot=500)
    assert r["delta_auroc"] == pytest.approx(-2 / 3) and r["seed_aware"]
    assert r["p_value"] > 0.01 and r["se"] > 0 and r["ci95"][0] < -2 / 3 < r["ci95"][1]
    ci = bootstrap_ci(y, b, n_boot=500)["auroc"]
    assert ci["seed_aware"] and ci["ci95"][1] - ci["ci95"][0] > 0.1
    perfect, inverted = [[1, 1, 1, 0, 0, 0]] * 2, [[0, 0, 0, 1, 1, 1]] * 2  # AUROC 1 and 0 on every resample
    r = paired_bootstrap_auroc(y, perfect, inverted, n_boot=500)
    assert not r["seed_aware"] and "test images" in r["method"]
    assert r["p_value"] == r["p_value_test_images_only"] == pytest.approx(2 / 501)
    assert "no spread" in bootstrap_ci(y, perfect, n_boot=500)["auroc"]["method"]


def test_degrees_of_freedom_count_the_test_image_variance_as_estimated():
    """Welch-Satterthwaite over every estimated term: runs - 1 per arm and (smaller class - 1) / 2 for the test
    images, so df stays within what those allow (it was about 70 at 5 runs per arm when the test-image variance,
    counted as known, dominated)."""
    rng = np.random.default_rng(24)
    y, d = _simulated_test_set(rng, 90)  # 27 positives: test-image df 13
    a, b = (d + k * np.where(y, 1, -1) + rng.normal(0, 1, 90) + rng.normal(0, 0.1, (5, 90)) for k in (1.0, 1.1))
    r = paired_bootstrap_auroc(y, a, b, n_boot=200)  # runs of an arm nearly agree: the test images dominate
    assert min(4, 13) <= r["df"] <= 4 + 4 + 13
    assert df_of_test_images(y) == 13 and df_of_test_images([0, 1]) == 1
    assert plug_in_correction(y) == pytest.approx(27 / 26) and plug_in_correction([0, 1]) == 1
    only_runs = _seed_aware(0.1, [(0.01, 5), (0.02, 3)], 0.0, 13, 0.95)
    assert only_runs["df"] == pytest.approx(0.03 ** 2 / (0.01 ** 2 / 4 + 0.02 ** 2 / 2))
    assert _seed_aware(0.1, [(0.0, 5)], 0.01, 13, 0.95)["df"] == pytest.approx(13)
    assert _seed_aware(0.1, [(0.0, 5)], 0.0, 13, 0.95) is None


def _nested_arm(rng, y, difficulty, generators, per_generator, generator_sd, run_sd=0.1):
    """Scores of a synthetic arm: ``per_generator`` classifier runs on each of ``generators`` generators, each
    generator shifting its runs' skill (sd ``generator_sd``); runs in generator order, and their generator ids."""
    shift = np.repeat(rng.normal(0, generator_sd, generators), per_generator)[:, None]
    runs = generators * per_generator
    logit = (1.0 + shift + rng.normal(0, run_sd, (runs, 1))) * np.where(y, 1, -1) + difficulty
    return logit + rng.normal(0, 1, (runs, len(y))), np.repeat(np.arange(generators) * 10 + 7, per_generator)


def _without_groups(result):
    return {k: v for k, v in result.items() if k != "groups"}


def test_no_groups_is_the_ungrouped_result_and_adds_nothing():
    rng = np.random.default_rng(30)
    y, d = _simulated_test_set(rng, 80)
    a, b = _simulated_arm(rng, y, d, 4, 0.35), _simulated_arm(rng, y, d, 6, 0.35)
    plain = paired_bootstrap_auroc(y, a, b, n_boot=200, seed=4)
    assert paired_bootstrap_auroc(y, a, b, n_boot=200, seed=4, groups_a=None, groups_b=None) == plain
    assert "groups" not in plain
    ci = bootstrap_ci(y, b, n_boot=200, seed=4)
    assert bootstrap_ci(y, b, n_boot=200, seed=4, groups=None) == ci and "groups" not in ci["auroc"]


def test_every_run_its_own_group_or_one_group_equals_ungrouped():
    """Every run its own group: var(group means) / G is the runs' spread / runs, with runs - 1 df, bit for bit (in
    whatever order the ids come). One group: nothing to estimate a group variance from; the ungrouped result."""
    rng = np.random.default_rng(31)
    y, d = _simulated_test_set(rng, 90)
    a, b = _simulated_arm(rng, y, d, 5, 0.35), _simulated_arm(rng, y, d, 5, 0.35)
    plain = paired_bootstrap_auroc(y, a, b, n_boot=200, seed=1)
    own = paired_bootstrap_auroc(y, a, b, n_boot=200, seed=1, groups_a=[4, 2, 0, 3, 1], groups_b=np.arange(5))
    assert own["groups"] == [5, 5] and _without_groups(own) == plain
    one = paired_bootstrap_auroc(y, a, b, n_boot=200, seed=1, groups_b=["g"] * 5)
    assert one["groups"] == [None, 1] and _without_groups(one) == plain
    ci = bootstrap_ci(y, b, n_boot=200, seed=1)
    for groups in (np.arange(5)[::-1], np.zeros(5)):
        grouped = bootstrap_ci(y, b, n_boot=200, seed=1, groups=groups)
        assert {k: _without_groups(v) for k, v in grouped.items()} == ci
        assert grouped["auroc"]["groups"] == len(set(groups))


def test_generators_that_differ_widen_the_interval_and_cut_the_df():
    """3 generators x 4 classifier runs whose generators differ far more than their runs: counted as 12 independent
    runs the interval claims 11 df and is too narrow; grouped, the synthetic arm's term has 2 df."""
    rng = np.random.default_rng(32)
    y, d = _simulated_test_set(rng, 150)
    control = _simulated_arm(rng, y, d, 12, 0.1)
    synthetic, generator = _nested_arm(rng, y, d, 3, 4, generator_sd=0.4)
    plain = paired_bootstrap_auroc(y, control, synthetic, n_boot=300)
    grouped = paired_bootstrap_auroc(y, control, synthetic, n_boot=300, groups_b=generator)
    assert grouped["groups"] == [None, 3] and grouped["delta_auroc"] == plain["delta_auroc"]
    assert grouped["df"] < plain["df"] and grouped["df"] < 6
    assert grouped["se"] > 1.5 * plain["se"]
    width = {k: r["ci95"][1] - r["ci95"][0] for k, r in (("plain", plain), ("grouped", grouped))}
    assert width["grouped"] > 1.5 * width["plain"]
    ci, ci_grouped = (bootstrap_ci(y, synthetic, n_boot=300, groups=g)["auroc"]["ci95"] for g in (None, generator))
    assert ci_grouped[1] - ci_grouped[0] > 1.5 * (ci[1] - ci[0])


def test_grouped_training_term_is_the_variance_of_group_means_over_groups():
    """var(group means, ddof 1) / G with G units; the model x image share it caps is noise / runs, at most that
    term (generators whose means agree exactly leave no share to subtract)."""
    rng = np.random.default_rng(33)
    y, d = _simulated_test_set(rng, 60)
    synthetic, generator = _nested_arm(rng, y, d, 3, 2, generator_sd=0.3)
    full = np.array([auroc(y, s) for s in synthetic])
    boot = resampled_metrics(y, [synthetic], n_boot=200)[0]["auroc"]
    index = _group_index(generator, 6)
    assert index.tolist() == [[0, 1], [2, 3], [4, 5]]
    seed_var, share, units = _arm_components(full, boot, index)
    assert units == 3 and seed_var == pytest.approx(full.reshape(3, 2).mean(1).var(ddof=1) / 3)
    noise = max(0.0, 6 / 5 * (boot.var(axis=0, ddof=1).mean() - boot.mean(axis=1).var(ddof=1)))  # one run's
    assert share == pytest.approx(min(seed_var, noise / 6)) and _arm_components(full, boot)[2] == 6
    agreeing = np.array([0.7, 0.8, 0.8, 0.7, 0.75, 0.75])  # group means all 0.75
    assert _arm_components(agreeing, boot, index)[:2] == (0.0, 0.0)


def test_unequal_or_misfit_groups_are_refused():
    rng = np.random.default_rng(34)
    y, d = _simulated_test_set(rng, 40)
    a = _simulated_arm(rng, y, d, 5, 0.35)
    with pytest.raises(ValueError, match="unequal sizes"):
        paired_bootstrap_auroc(y, a, a, n_boot=50, groups_b=[0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="unequal sizes"):
        bootstrap_ci(y, a, n_boot=50, groups=[0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="one id per run"):
        paired_bootstrap_auroc(y, a, a, n_boot=50, groups_a=[0, 0, 1, 1])
