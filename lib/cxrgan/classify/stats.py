"""Classifier metrics with uncertainty: AUROC and threshold metrics, bootstrap confidence intervals, the paired
comparison of two classifiers on the same test images (paired bootstrap of the AUROC difference, exact McNemar
test of their accuracies), and mean/sd/CI over training seeds."""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

METRICS = ("accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity")


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


def bootstrap_ci(y_true, score, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 threshold: float = 0.5) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of every metric, resampling test images with replacement within each class
    (so every resample has both classes). ``score`` may be (runs, n): the CI is then of the metric's mean over
    the runs (e.g. training seeds evaluated on the same test images)."""
    y, s = np.asarray(y_true).astype(bool), np.atleast_2d(np.asarray(score, dtype=np.float64))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    draws = {k: [] for k in METRICS}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        per_run = [binary_metrics(y[idx], run[idx], threshold) for run in s]  # several seeds: their mean
        for k in METRICS:
            draws[k].append(np.mean([m[k] for m in per_run]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in draws.items()}


def paired_bootstrap_auroc(y_true, score_a, score_b, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> dict[str, float]:
    """AUROC(b) - AUROC(a) on the same test images: the difference, its percentile CI, and a two-sided bootstrap
    p-value (twice the share of resampled differences on the far side of zero). Scores may be (runs, n): the
    difference is then of the mean AUROC over runs, as the runs' means are reported."""
    y = np.asarray(y_true).astype(bool)
    a, b = np.atleast_2d(np.asarray(score_a, np.float64)), np.atleast_2d(np.asarray(score_b, np.float64))

    def delta(idx):
        return np.mean([auroc(y[idx], r[idx]) for r in b]) - np.mean([auroc(y[idx], r[idx]) for r in a])

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    deltas = np.array([delta(np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]))
                       for _ in range(n_boot)])
    lo, hi = np.percentile(deltas, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    p = min(1.0, 2 * min((deltas <= 0).mean(), (deltas >= 0).mean()))
    return {"delta_auroc": float(delta(np.arange(len(y)))), "ci95": (float(lo), float(hi)), "p_value": float(p)}


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
