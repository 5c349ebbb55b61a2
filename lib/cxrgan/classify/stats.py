"""Classifier metrics with uncertainty: AUROC and threshold metrics; intervals for seed-mean metrics and for the
difference between two training methods that hold for the method (new training runs, new test images), not only
for the trained models at hand; the exact McNemar test of two classifiers' accuracies; mean/sd/Student-t CI over
training seeds.

Test images are resampled within each class, so every resample keeps the test set's class counts: intervals of
accuracy, sensitivity and specificity are conditional on the test set's prevalence."""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

METRICS = ("accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity")
_CHUNK = 200  # bootstrap replicates computed at once (bounds memory at replicates x runs x test images)


def auroc(y_true, score) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties counting 1/2
    (the Mann-Whitney U statistic, from average ranks)."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _st.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y_true, score, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, AUROC, sensitivity (recall of class 1), specificity (recall of class 0)."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(score, dtype=np.float64) >= threshold
    sens = float((pred & y).sum() / y.sum()) if y.any() else float("nan")
    spec = float((~pred & ~y).sum() / (~y).sum()) if (~y).any() else float("nan")
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": (sens + spec) / 2, "auroc": auroc(y, score),
            "sensitivity": sens, "specificity": spec}


def _sorted_metrics(s: np.ndarray, n_pos: int, threshold: float) -> dict[str, np.ndarray]:
    """Every metric of scores ``s`` (..., n) whose first ``n_pos`` columns are the positives, over the last axis."""
    n_neg = s.shape[-1] - n_pos
    ranks = _st.rankdata(s, axis=-1)
    pred = s >= threshold
    sens = pred[..., :n_pos].mean(-1)
    spec = (~pred[..., n_pos:]).mean(-1)
    return {"accuracy": (sens * n_pos + spec * n_neg) / (n_pos + n_neg), "balanced_accuracy": (sens + spec) / 2,
            "auroc": (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg),
            "sensitivity": sens, "specificity": spec}


def resampled_metrics(y_true, arms, n_boot: int = 2000, seed: int = 0, threshold: float = 0.5
                          ) -> list[dict[str, np.ndarray]]:
    """Every run's metrics on ``n_boot`` resamples of the test images (stratified by class; the same resamples for
    every arm, so differences between arms are paired). ``arms``: score arrays (runs, n) on the same test images.
    Returns per arm {metric: (n_boot, runs)}."""
    y = np.asarray(y_true).astype(bool)
    arms = [np.atleast_2d(np.asarray(a, np.float64)) for a in arms]
    out = [{k: [] for k in METRICS} for _ in arms]
    for idx in _resamples(y, n_boot, seed):
        for arm, acc in zip(arms, out):
            per_run = _sorted_metrics(arm[:, idx].transpose(1, 0, 2), int(y.sum()), threshold)  # each (b, runs)
            for k in METRICS:
                acc[k].append(per_run[k])
    return [{k: np.concatenate(v) for k, v in acc.items()} for acc in out]


def _resamples(y: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """The test-image resamples, ``_CHUNK`` at a time: (b, n) image indices, each row the positives' then the
    negatives' draws (with replacement, within each class)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("the test set needs both classes")
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        out.append(np.concatenate([rng.choice(pos, (b, len(pos))), rng.choice(neg, (b, len(neg)))], axis=1))
    return out


def _resampled_auroc(y: np.ndarray, arms: list[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """``resampled_metrics(y, arms, n_boot, seed)``'s AUROC of every arm, (n_boot, runs) each, bit for bit, several
    times faster (paired_bootstrap_auroc at 24 runs per arm x 420 images: 0.43 s -> 0.05 s, 200 resamples): each
    run's images are sorted once, and a resample is how often it holds each image. The Mann-Whitney U = sum over
    positives of count x (negatives' count below its score + half of those at its score), from the running count
    of negatives in the run's order; every term is a whole or half number, so U and U / (positives x negatives)
    come out exactly as the ranks' do. Scores with NaN go the ranks' way."""
    if any(np.isnan(arm).any() for arm in arms):
        return [m["auroc"] for m in resampled_metrics(y, arms, n_boot, seed)]
    n, n_pos = len(y), int(y.sum())
    prepared = [(order, y[order], _tie_blocks(arm, order)) for arm in arms for order in [np.argsort(arm, axis=-1)]]
    out = [[] for _ in arms]
    for idx in _resamples(y, n_boot, seed):
        b = len(idx)
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        for (order, positive, ties), acc in zip(prepared, out):
            w = np.take(counts, order, axis=1)  # (b, runs, n): each image's count, in each run's score order
            below = np.cumsum(np.where(positive, 0, w), axis=-1)  # negatives at or before each position
            if ties is None:  # a positive's own position holds no negative: below counts those under its score
                u = (np.where(positive, w, 0) * below).sum(-1)
            else:  # negatives before its block of equal scores + those up to the block's end, halved
                below = np.concatenate([np.zeros_like(below[..., :1]), below], axis=-1)
                row = np.arange(len(order))[:, None]
                u = (np.where(positive, w, 0) * (below[:, row, ties[0]] + below[:, row, ties[1]])).sum(-1) / 2
            acc.append(u / (n_pos * (n - n_pos)))
    return [np.ascontiguousarray(np.concatenate(acc)) for acc in out]  # (C order: sums over it round the same)


def _tie_blocks(arm: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For each run (row of ``arm``, images in ``order`` of score) and position: the first position of its block
    of equal scores and the position just past the block's end; None when no run has equal scores."""
    ranked = np.take_along_axis(arm, order, axis=-1)
    new = np.ones(arm.shape, bool)
    new[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    if new.all():
        return None
    at = np.broadcast_to(np.arange(arm.shape[-1]), arm.shape)
    last = np.ones(arm.shape, bool)
    last[:, :-1] = new[:, 1:]
    first = np.maximum.accumulate(np.where(new, at, 0), axis=-1)
    past = np.minimum.accumulate(np.where(last, at + 1, arm.shape[-1])[:, ::-1], axis=-1)[:, ::-1]
    return first, past


def _arm_components(full: np.ndarray, boot: np.ndarray, index: np.ndarray | None = None
                    ) -> tuple[float, float, int]:
    """One arm's metric: (variance of its run mean from training, the model x image part of the test-image bootstrap
    variance of its run mean, the number of independent units that variance is estimated from: runs, or groups).
    ``full``: (runs,) values on all test images; ``boot``: (B, runs); ``index``: ``_group_index``'s (G, C) runs of
    each group, or None.

    The spread of runs on one test set (s^2) holds the runs' real differences *and* each model's own luck with these
    particular images (model x image noise); the test-image bootstrap of the run mean holds that luck again, divided
    by the number of runs. Adding both would count it twice (a null simulation showed 0.5% false positives instead
    of 5%), so its bootstrap share is estimated, from how much more a single run's metric varies over test resamples
    than the run mean's, and subtracted. That share is part of s^2, so its estimate is capped at s^2: above it, the
    subtraction would remove test-image variance the runs never showed (runs that agree exactly, s^2 = 0, left a
    standard error of 0 and p = 0 before this cap).

    Nested runs (``index`` with G >= 2 groups of C runs, e.g. C classifier seeds on each of G generators): the
    training variance of the run mean is var(group means) / G with G - 1 df. On one test set a group mean holds its
    own generator's effect, its runs' effects / C and their model x image noise / C, so that term estimates all of
    them without bias. The share subtracted is still the noise / runs (runs = G C), and the cap is the same rule
    as above: the share is part of the training term, so it is capped at var(group means) / G (the noise of one run
    at C var(group means)); without groups that term is s^2 / runs, and every run its own group gives exactly the
    ungrouped result. A generator x image interaction (a generator's runs sharing errors on some images) is counted
    partly twice, in the group means and in the bootstrap: conservative. One group only (or None): the ungrouped
    terms, so the result holds for that group (that generator), not over new ones."""
    r = len(full)
    if r < 2:
        return float("nan"), 0.0, r
    single = boot.var(axis=0, ddof=1).mean()
    mean = boot.mean(axis=1).var(ddof=1)
    interaction = max(0.0, r / (r - 1) * (single - mean))
    if index is None or len(index) < 2:
        spread = float(full.var(ddof=1))
        return spread / r, float(min(spread, interaction) / r), r
    g = len(index)
    seed_var = float(full[index].mean(axis=1).var(ddof=1)) / g
    return seed_var, float(min(seed_var, interaction / r)), g


def _group_index(groups, runs: int) -> np.ndarray | None:
    """The runs of each group as a (G, C) index array, groups in the order they first appear; None without groups.
    ``groups``: one id per run (e.g. its generator's seed). Groups must be of equal size (ValueError)."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (runs,):
        raise ValueError(f"groups: one id per run ({runs} runs), got shape {g.shape}")
    _, first, inverse, counts = np.unique(g, return_index=True, return_inverse=True, return_counts=True)
    if counts.min() != counts.max():
        raise ValueError(f"groups of unequal sizes {sorted(counts.tolist())}: the group-mean variance assumes "
                         "the same number of runs in every group")
    return np.stack([np.flatnonzero(inverse.ravel() == k) for k in np.argsort(first)])


def df_of_test_images(y_true) -> float:
    """Degrees of freedom of a test-image bootstrap variance of AUROC-like metrics: (images of the smaller class
    - 1) / 2, at least 1. The variance rests mostly on the smaller class, and its per-image placement values are
    skewed, so the estimate varies about twice as much as a normal sample variance of that many values would: under
    the model of bench/experiments/stats_coverage.py the estimate v's effective df over test sets, 2 E[v]^2 / Var(v),
    came out 13-17 at 27 positives (of 90 images) and 41 at 90 (of 300)."""
    return max(1.0, (_smaller_class(y_true) - 1) / 2)


def plug_in_correction(y_true) -> float:
    """m / (m - 1), m the smaller class's images: the bootstrap's variance is a plug-in one (it divides by m, not
    m - 1) and comes out too small by up to that factor (by (m - 1) / m for the class that dominates the variance
    of AUROC-like metrics, less for the other); it scales the test-image variance back, at the bound."""
    m = _smaller_class(y_true)
    return m / (m - 1) if m > 1 else 1.0


def _smaller_class(y_true) -> int:
    y = np.asarray(y_true).astype(bool)
    return min(int(y.sum()), int((~y).sum()))


def _seed_aware(estimate: float, seed_terms: list[tuple[float, int]], test_var: float, test_df: float,
                level: float) -> dict | None:
    """Student-t interval of ``estimate`` with variance sum(seed variances) + test_var; None when that variance is
    0 (no spread measured anywhere: not certainty, so the caller falls back to its test-image bootstrap).

    Degrees of freedom: Welch-Satterthwaite over every estimated term, each seed term (variance, n) with n - 1 (n:
    the arm's runs, or its groups when its runs are nested: ``_arm_components``) and the test-image term with
    ``test_df`` (``df_of_test_images``). Counting the test-image variance as known gave df of
    about 70-80 at 5 runs where that term dominates, and a method-mean interval covering 93% instead of 95%; now the
    df lies between the smallest term's df and their sum (at most sum(runs - 1) + test_df). The seed terms' df alone
    (runs - 1 at one arm) would hold too, but waste power: 97-100% coverage at 3-5 runs in an exploratory run of the
    same simulation model (docs/benchmarks.md, "Interval coverage of the seed-aware statistics", has this rule's)."""
    seed_var = sum(v for v, _ in seed_terms)
    var = seed_var + test_var
    if not var > 0:
        return None
    se = float(np.sqrt(var))
    denom = sum(v * v / (n - 1) for v, n in seed_terms) + test_var * test_var / test_df
    df = var * var / denom
    q = float(_st.t.ppf((1 + level) / 2, df))
    p = float(2 * _st.t.sf(abs(estimate) / se, df))
    return {"ci95": (estimate - q * se, estimate + q * se), "se": se, "df": df, "p_value": p}


def _percentile(draws: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is zero": twice the smaller tail share at or beyond zero, as
    (k + 1) / (B + 1) so that it is never 0."""
    d = np.asarray(draws)
    k = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2 * (k + 1) / (len(d) + 1)))


SEED_AWARE = "seed-aware: Student t over training runs + test-image bootstrap"
FIXED_ONE_RUN = "bootstrap over test images (one run: models held fixed)"
FIXED_NO_SPREAD = "bootstrap over test images (no spread between runs or test resamples left: models held fixed)"


def bootstrap_ci(y_true, score, n_boot: int = 2000, seed: int = 0, level: float = 0.95, threshold: float = 0.5,
                 groups=None) -> dict[str, dict]:
    """Every metric's mean over training runs (``score``: (runs, n) or (n,)) with two intervals:

    - ``ci95``: about the training method (a new set of runs on a new test set): Student-t with the spread between
      runs plus the test-image bootstrap variance (``plug_in_correction``), the model x image noise counted once
      (``_arm_components``), on the logit scale, with the degrees of freedom of ``_seed_aware``. With a single run
      there is no spread to measure, and with a variance of 0 (every run equal, no test-image variance left) a zero
      width would claim certainty: both times it equals the test-images-only interval (``seed_aware`` False;
      ``method`` says which).
    - ``ci95_test_images_only``: percentile bootstrap over test images with these trained models held fixed.

    ``groups``: nested runs, one group id per run (e.g. the seed of the generator whose images trained it; equal
    group sizes): ``ci95`` then holds over new groups too (var(group means) / G with G - 1 df: ``_arm_components``);
    each metric's result gains ``groups`` (G). With one group it is the ungrouped interval, about that group.
    """
    s = np.atleast_2d(np.asarray(score, np.float64))
    y = np.asarray(y_true).astype(bool)
    index = _group_index(groups, len(s))
    boot = resampled_metrics(y, [s], n_boot, seed, threshold)[0]
    out = {}
    test = (plug_in_correction(y), df_of_test_images(y))
    for k in METRICS:
        full = np.array([binary_metrics(y, run, threshold)[k] for run in s])
        out[k] = _arm_interval(full, boot[k], test, level, index)
        if index is not None:
            out[k]["groups"] = len(index)
    return out


def _arm_interval(full: np.ndarray, boot: np.ndarray, test: tuple[float, float], level: float,
                  index: np.ndarray | None = None) -> dict:
    """bootstrap_ci's result for one metric: ``full`` (runs,) on all test images, ``boot`` (B, runs); ``test``: the
    test-image variance's (plug-in correction, df); ``index``: the runs' groups (``_group_index``) or None."""
    mean_draws = boot.mean(axis=1)
    fixed = _percentile(mean_draws, level)
    res = None
    if len(full) >= 2:
        seed_var, interaction, units = _arm_components(full, boot, index)
        test_var = test[0] * max(0.0, float(mean_draws.var(ddof=1)) - interaction)
        res = _seed_aware(float(full.mean()), [(seed_var, units)], test_var, test[1], level)
    if res is None:
        return {"ci95": fixed, "ci95_test_images_only": fixed, "seed_aware": False,
                "method": FIXED_ONE_RUN if len(full) < 2 else FIXED_NO_SPREAD}
    return {"ci95": _on_logit_scale(float(full.mean()), res), "ci95_test_images_only": fixed, "seed_aware": True,
            "method": SEED_AWARE}


def _on_logit_scale(p: float, res: dict) -> tuple[float, float]:
    """The t interval of a proportion-like metric mapped through the logit (delta method), so it stays in [0, 1] and
    is asymmetric near the ends; a symmetric interval there undercovers (a high estimate comes with a small
    bootstrap variance). At 0 or 1 the symmetric interval, clipped."""
    lo, hi = res["ci95"]
    if not 0 < p < 1:
        return max(0.0, lo), min(1.0, hi)
    half = (hi - p) / (p * (1 - p))
    logit = np.log(p / (1 - p))
    return float(1 / (1 + np.exp(-(logit - half)))), float(1 / (1 + np.exp(-(logit + half))))


def paired_bootstrap_auroc(y_true, score_a, score_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                           groups_a=None, groups_b=None) -> dict:
    """Method b against method a (scores (runs, n) each, on the same test images): the difference in mean AUROC
    over runs. Main result (``ci95``, ``p_value``): a seed-aware interval and test, Welch-t over the runs of both
    arms plus the paired test-image bootstrap variance of the difference (``plug_in_correction``), the model x
    image noise counted once, so it holds for the training methods, not only for these trained models. Secondary:
    the paired percentile bootstrap over test images with the models held fixed (``ci95_test_images_only``,
    ``p_value_test_images_only``). With a single run in either arm the main result cannot include training
    variation, and with a variance of 0 (every run of each arm equal, no test-image variance left) a zero standard
    error would claim certainty (p = 0): both times it equals the secondary one (``seed_aware`` False; ``method``
    says which). Degrees of freedom: see ``_seed_aware``; the interval is clipped to [-1, 1].

    ``groups_a``, ``groups_b``: an arm's runs nested in groups, one group id per run (e.g. a synthetic arm: C
    classifier seeds on each of G generators, the id the generator's seed; equal group sizes, else ValueError).
    That arm's training variance is then var(group means) / G with G - 1 df (``_arm_components``), so the result
    holds over retraining the generators too; the result gains ``groups`` ([G_a, G_b], None for an ungrouped arm).
    An arm with one group counts as ungrouped: the result then holds for that one generator only."""
    y = np.asarray(y_true).astype(bool)
    a, b = np.atleast_2d(np.asarray(score_a, np.float64)), np.atleast_2d(np.asarray(score_b, np.float64))
    index_a, index_b = _group_index(groups_a, len(a)), _group_index(groups_b, len(b))
    full_a, full_b = np.array([auroc(y, r) for r in a]), np.array([auroc(y, r) for r in b])
    delta = float(full_b.mean() - full_a.mean())
    boot_a, boot_b = _resampled_auroc(y, [a, b], n_boot, seed)
    deltas = boot_b.mean(axis=1) - boot_a.mean(axis=1)
    fixed = {"ci95_test_images_only": _percentile(deltas, level), "p_value_test_images_only": bootstrap_p(deltas)}
    base = {"delta_auroc": delta, "runs": [len(a), len(b)]}
    if index_a is not None or index_b is not None:
        base["groups"] = [None if i is None else len(i) for i in (index_a, index_b)]
    if len(a) < 2 or len(b) < 2:
        return {**base, "ci95": fixed["ci95_test_images_only"], "p_value": fixed["p_value_test_images_only"],
                "seed_aware": False, "method": "paired " + FIXED_ONE_RUN, **fixed}
    (va, ia, na), (vb, ib, nb) = _arm_components(full_a, boot_a, index_a), _arm_components(full_b, boot_b, index_b)
    test_var = plug_in_correction(y) * max(0.0, float(deltas.var(ddof=1)) - ia - ib)
    res = _seed_aware(delta, [(va, na), (vb, nb)], test_var, df_of_test_images(y), level)
    if res is None:
        return {**base, "ci95": fixed["ci95_test_images_only"], "p_value": fixed["p_value_test_images_only"],
                "seed_aware": False, "method": "paired " + FIXED_NO_SPREAD, **fixed}
    lo, hi = res["ci95"]
    return {**base, "ci95": (max(-1.0, lo), min(1.0, hi)), "p_value": res["p_value"], "se": res["se"],
            "df": res["df"], "seed_aware": True, "method": "seed-aware: Welch t over training runs + paired "
            "test-image bootstrap", **fixed}


def mcnemar(y_true, pred_a, pred_b) -> dict[str, float]:
    """Exact McNemar test: of the images exactly one classifier gets right, is the split 50/50?"""
    y = np.asarray(y_true).astype(bool)
    ok_a, ok_b = np.asarray(pred_a).astype(bool) == y, np.asarray(pred_b).astype(bool) == y
    only_a, only_b = int((ok_a & ~ok_b).sum()), int((~ok_a & ok_b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(_st.binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


def over_seeds(values, level: float = 0.95) -> dict[str, float]:
    """Mean, sample sd and Student-t CI of a metric over independently seeded runs."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "sd": float("nan"), "ci95": (float("nan"), float("nan")), "n": len(v)}
    sd = float(v.std(ddof=1))
    half = float(_st.t.ppf((1 + level) / 2, len(v) - 1) * sd / np.sqrt(len(v)))
    return {"mean": mean, "sd": sd, "ci95": (mean - half, mean + half), "n": len(v)}
