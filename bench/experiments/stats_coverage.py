"""Interval coverage of the seed-aware statistics (cxrgan.classify.stats), by simulation: does bootstrap_ci's ci95
cover a training method's mean AUROC, and paired_bootstrap_auroc's ci95 the true difference between two methods,
95% of the time; how often does the paired test call two identical methods different?

The model: a test set of ``n`` images (``positives`` of them positive), each with a latent difficulty d ~ N(0, 1)
shared by every model; a training run of a method draws a skill k ~ N(mu, tau^2) (the run effect) and scores image
i with logit k * (+1 positive, -1 negative) + d_i + e_ri, e_ri ~ N(0, 1) its own model x image noise. A run's
expected AUROC over test sets is P(k + d + e > -k + d' + e') = Phi(k), so the method's mean AUROC (over runs and
test sets) is Phi(mu / sqrt(1 + tau^2)), in closed form. tau is set so that the run effect alone has an AUROC sd of
``run_sd`` (Phi'(mu) * tau); the model x image noise adds to it, and the spread of runs on one test set (what the
real data shows, about 0.05) is reported with the results.

Every replicate draws one test set and three arms of ``runs`` runs on it: a (mu), b (a true effect of ``effect``
AUROC) and a' (a again, the null). The library at ``before`` (a git revision: the code before the fix, loaded from
git) and the working tree's library see the same draws and bootstrap seeds.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import fire
import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import ROOT, as_list, log, record_start, show_table, write_section  # noqa: E402
from cxrgan.classify import stats as after_stats

BEFORE = "8c324a5"  # main before the fix: df with the test-image variance counted as known; no cap, no fallback
MU = 0.8  # method a's mean skill: mean AUROC about 0.78


def stats_at(rev: str) -> types.ModuleType:
    """cxrgan/classify/stats.py as it was at git revision ``rev`` (it imports only numpy and scipy)."""
    src = subprocess.run(["git", "show", f"{rev}:lib/cxrgan/classify/stats.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    module = types.ModuleType(f"stats_{rev}")
    exec(compile(src, f"stats.py@{rev}", "exec"), module.__dict__)
    return module


def true_auroc(mu: float, tau: float) -> float:
    """The method's mean AUROC over runs and test sets (see the module docstring)."""
    return float(st.norm.cdf(mu / np.sqrt(1 + tau * tau)))


def skill_for(auroc: float, tau: float) -> float:
    """The mean skill whose method has mean AUROC ``auroc``."""
    return float(st.norm.ppf(auroc) * np.sqrt(1 + tau * tau))


def draw_arm(rng: np.random.Generator, y: np.ndarray, d: np.ndarray, runs: int, mu: float, tau: float):
    """Scores (runs, n) of ``runs`` training runs of the method with mean skill ``mu`` on the test set (y, d)."""
    skill = rng.normal(mu, tau, (runs, 1))
    return skill * np.where(y, 1.0, -1.0) + d + rng.normal(0, 1, (runs, len(y)))


def judge(module, y, a, b, null, truth: dict, n_boot: int, seed: int) -> dict:
    """One replicate's verdicts from one version of the library."""
    ci = module.bootstrap_ci(y, a, n_boot, seed)["auroc"]["ci95"]
    eff = module.paired_bootstrap_auroc(y, a, b, n_boot, seed)
    nul = module.paired_bootstrap_auroc(y, a, null, n_boot, seed)
    return {"mean_covered": ci[0] <= truth["mean"] <= ci[1], "mean_width": ci[1] - ci[0],
            "delta_covered": eff["ci95"][0] <= truth["delta"] <= eff["ci95"][1], "detected": eff["ci95"][0] > 0,
            "delta_width": eff["ci95"][1] - eff["ci95"][0], "df": eff.get("df", np.nan),
            "false_positive": not nul["ci95"][0] <= 0 <= nul["ci95"][1], "null_p0": nul["p_value"] == 0}


def simulate(modules: dict, runs: int, reps: int, n: int, positives: int, n_boot: int, effect: float,
             run_sd: float, seed: int) -> tuple[dict, float]:
    """``reps`` replicates at ``runs`` runs per arm: per library version, each verdict's list over replicates;
    and the mean spread (sd) of one arm's runs on one test set."""
    tau = run_sd / st.norm.pdf(MU)
    truth = {"mean": true_auroc(MU, tau), "delta": effect}
    mu_b = skill_for(truth["mean"] + effect, tau)
    rng = np.random.default_rng([seed, runs, round(run_sd * 1e4)])
    y = np.arange(n) < positives
    out, spreads = {name: [] for name in modules}, []
    for r in range(reps):
        d = rng.normal(0, 1, n)
        a, b, null = (draw_arm(rng, y, d, runs, mu, tau) for mu in (MU, mu_b, MU))
        spreads.append(np.std([after_stats.auroc(y, s) for s in a], ddof=1))
        for name, module in modules.items():
            out[name].append(judge(module, y, a, b, null, truth, n_boot, r))
        if (r + 1) % 100 == 0:
            log(f"{runs} runs: {r + 1}/{reps}")
    return out, float(np.mean(spreads))


def row(setting: list[str], name: str, verdicts: list[dict]) -> list[str]:
    """One table row: the setting's cells, the library, shares in percent (SE about 1% at 500 replicates), medians of
    interval widths and df."""
    def share(key):
        return f"{100 * np.mean([v[key] for v in verdicts]):.1f}%"

    def median(key, fmt):
        return format(float(np.nanmedian([v[key] for v in verdicts])), fmt)
    return [*setting, name, share("mean_covered"), median("mean_width", ".3f"), share("delta_covered"),
            median("delta_width", ".3f"), median("df", ".1f"), share("detected"), share("false_positive"),
            share("null_p0")]


def main(reps: int = 500, runs: str = "3,5", run_sd: str = "0.035,0.015", n: int = 90, positives: int = 27,
         n_boot: int = 200, effect: float = 0.05, before: str = BEFORE, seed: int = 0, out: str = None):
    """Simulate at each run-effect sd (``run_sd``, in AUROC) and number of runs per arm (``runs``), with the library
    at ``before`` and the working tree's; write the table to docs/benchmarks.md (``out`` another file; "" none)."""
    record_start()
    modules = {f"before ({before})": stats_at(before), "after (this tree)": after_stats}
    rows = []
    for sd in as_list(run_sd, float):
        for r in as_list(runs):
            verdicts, spread = simulate(modules, r, reps, n, positives, n_boot, effect, sd, seed)
            setting = [f"{sd:g}", f"{spread:.3f}", f"{true_auroc(MU, sd / st.norm.pdf(MU)):.4f}", str(r)]
            rows += [row(setting, name, v) for name, v in verdicts.items()]
    headers = ["run effect sd", "runs' sd on one test set", "true mean AUROC", "runs/arm", "library",
               "mean AUROC ci95 covers", "its width", f"Δ ci95 covers (Δ = {effect:+g})", "its width",
               "median df of Δ", f"Δ = {effect:+g} detected", "null false positives", "null p = 0"]
    table = show_table("seed-aware intervals: coverage", headers, rows)
    test_df = max(1.0, (min(positives, n - positives) - 1) / 2)
    body = f"""Simulated test sets of {n} images ({positives} positive) and training runs (the model in the docstring
of `bench/experiments/stats_coverage.py`: latent image difficulty shared by all models, a run effect of the AUROC
sd given, model x image noise on top; the runs' spread on one test set is what the real data shows, about 0.05).
{reps} replicates per row, so a share near 95% has an SE of about 1%; bootstrap with {n_boot} resamples; both
library versions see the same draws and bootstrap seeds.

- "mean AUROC ci95 covers": `bootstrap_ci`'s interval contains the method's mean AUROC over runs and test sets
  (closed form under the model);
- "Δ ci95 covers": `paired_bootstrap_auroc`'s interval contains the true difference; "detected": it lies above 0;
- "null false positives": two arms of the same method whose interval excludes 0 (nominal 5%); "null p = 0": how
  often the null test said p = 0.

{table}

Before ({before}): the Welch-Satterthwaite df counted the test-image bootstrap variance as known, so where that
term dominated (a small run effect, more runs) the df was large and the method-mean interval too narrow. After:
the test-image variance counts as estimated, with (smaller class - 1) / 2 = {test_df:g} df
(`stats.df_of_test_images`), and is scaled by m / (m - 1), m the smaller class, since the bootstrap's plug-in
variance comes out too small by up to that factor (`stats.plug_in_correction`); the model x image share subtracted
from it is capped by the runs' spread on the test set.
"""
    write_section("stats-coverage", "Interval coverage of the seed-aware statistics", body, out)


if __name__ == "__main__":
    fire.Fire(main)
