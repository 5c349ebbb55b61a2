"""Power analysis of the study design, by simulation with the project's own statistics: how large a gain in AUROC
from synthetic training images would the study's verdict (cxrgan.classify.stats.paired_bootstrap_auroc, the
synthetic arm's runs nested in their generators) detect, at how many generators G and classifier seeds C each?

The model extends bench/experiments/stats_coverage.py's: a test set of ``n`` images (``positives`` positive), each
with a latent difficulty d ~ N(0, 1) shared by every model; a training run scores image i with logit
k * (+1 positive, -1 negative) + d_i + e_ri, e_ri ~ N(0, 1) its own model x image noise, and skill k = mu + g + r:
r ~ N(0, tau^2) the run effect (every run), g ~ N(0, tau_g^2) the generator effect, shared by the C classifier runs
trained on one generator's images (synthetic arm only). A method's mean AUROC over runs, generators and test sets
is Phi(mu / sqrt(1 + tau^2 + tau_g^2)). tau and tau_g are set as stats_coverage sets tau: tau = run_sd / Phi'(mu),
so the run effect alone has an AUROC sd of ``run_sd`` between classifier seeds, and tau_g = gen_sd / Phi'(mu), an
AUROC sd of ``gen_sd`` between generators' means. The synthetic arm's mu is set so that its mean AUROC exceeds the
control arm's (mu = MU, no generator level) by the true effect.

Every replicate draws one test set, a control arm and the synthetic arm's generator and run effects and noise;
every true effect (and the null, effect 0) is judged on the same draws (common random numbers: the power curve is
smooth and its points are not independent). The verdict: paired_bootstrap_auroc(y, control, synthetic,
groups_b=generator) with its seed-aware 95% interval; detected = the interval lies above 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fire
import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import as_list, log, record_start, show_table, write_section  # noqa: E402
from cxrgan.classify import stats

MU = 0.8  # the control arm's mean skill: mean AUROC about 0.78
DESIGNS = "1x3,1x5,1x8,2x3,2x5,2x8,3x3,3x5,3x8"  # G generators x C classifier seeds per generator
EFFECTS = "0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.10"


def mean_auroc(mu: float, *taus: float) -> float:
    """A method's mean AUROC over its runs (skill sds ``taus``) and test sets (see the module docstring)."""
    return float(st.norm.cdf(mu / np.sqrt(1 + sum(t * t for t in taus))))


def skill_for(auroc: float, *taus: float) -> float:
    """The mean skill whose method (skill sds ``taus``) has mean AUROC ``auroc``."""
    return float(st.norm.ppf(auroc) * np.sqrt(1 + sum(t * t for t in taus)))


def control_runs(control: str | int, g: int, c: int) -> int:
    """The control arm's runs: "total" (G x C, as many as the synthetic arm), "C" (C), or a number."""
    text = str(control).lower()
    return g * c if text == "total" else c if text == "c" else int(text)


def draw(rng: np.random.Generator, reps: int, y: np.ndarray, runs: tuple[int, int], c: int,
         tau: float, tau_g: float) -> tuple[np.ndarray, np.ndarray]:
    """``reps`` replicates' scores without the arms' mean skills: control (reps, runs[0], n) and synthetic
    (reps, runs[1], n), the synthetic runs in generator order, ``c`` per generator."""
    sign = np.where(y, 1.0, -1.0)
    d = rng.normal(0, 1, (reps, 1, len(y)))
    control = rng.normal(0, tau, (reps, runs[0], 1)) * sign + d + rng.normal(0, 1, (reps, runs[0], len(y)))
    generator = np.repeat(rng.normal(0, tau_g, (reps, runs[1] // c, 1)), c, axis=1)
    skill = generator + rng.normal(0, tau, (reps, runs[1], 1))
    return control, skill * sign + d + rng.normal(0, 1, (reps, runs[1], len(y)))


def simulate(design: tuple[int, int], runs_control: int, effects: list[float], reps: int, y: np.ndarray,
             taus: tuple[float, float], n_boot: int, seed: int, level: float = 0.95) -> dict[float, list[dict]]:
    """One design's verdicts: {true effect (0 first): one dict per replicate}."""
    g, c = design
    rng = np.random.default_rng([seed, g, c, runs_control])
    control, synthetic = draw(rng, reps, y, (runs_control, g * c), c, *taus)
    sign = np.where(y, 1.0, -1.0)
    control += MU * sign
    base = mean_auroc(MU, taus[0])
    generator = np.repeat(np.arange(g), c)
    out = {}
    for effect in [0.0, *effects]:
        mu = skill_for(base + effect, *taus)
        verdicts = []
        for r in range(reps):
            res = stats.paired_bootstrap_auroc(y, control[r], synthetic[r] + mu * sign, n_boot, r, level,
                                              groups_b=generator)
            lo, hi = res["ci95"]
            verdicts.append({"detected": lo > 0, "excludes_0": not lo <= 0 <= hi, "half_width": (hi - lo) / 2,
                             "df": res.get("df", np.nan), "delta": res["delta_auroc"], "se": res.get("se", np.nan)})
        out[effect] = verdicts
    return out


def min_detectable(effects: list[float], power: list[float], target: float = 0.8) -> float:
    """The smallest true effect with ``power`` >= ``target``, linearly interpolated between the grid's effects
    (``effects`` ascending, 0 first); NaN when none reaches it."""
    for i in range(1, len(effects)):
        if power[i] >= target:
            e0, e1, p0, p1 = effects[i - 1], effects[i], power[i - 1], power[i]
            return e1 if p1 == p0 else e0 + (target - p0) * (e1 - e0) / (p1 - p0)
    return float("nan")


def design_row(design: tuple[int, int], runs_control: int, verdicts: dict[float, list[dict]]) -> list[str]:
    """One table row: the design, the null's false positives, CI half-width, df and standard error against the
    estimates' actual sd, power per effect, MDE."""
    g, c = design
    null = verdicts[0.0]
    grid = sorted(verdicts)
    power = [float(np.mean([v["detected"] for v in verdicts[e]])) for e in grid]
    mde = min_detectable(grid, power)
    se_ratio = np.sqrt(np.nanmean([v["se"] ** 2 for v in null])) / np.std([v["delta"] for v in null], ddof=1)
    return [f"{g} x {c}", str(g * c), str(runs_control), f"{100 * np.mean([v['excludes_0'] for v in null]):.1f}%",
            f"{np.median([v['half_width'] for v in null]):.3f}", f"{np.nanmedian([v['df'] for v in null]):.1f}",
            f"{se_ratio:.2f}", *(f"{100 * p:.0f}%" for p in power[1:]),
            f"{mde:.3f}" if mde == mde else f"> {grid[-1]:.2f}"]


def run_spread(y: np.ndarray, tau: float, runs: int = 8, sets: int = 200, seed: int = 0) -> float:
    """The mean sd of AUROC between ``runs`` classifier runs on one test set (run effect and model x image noise
    together: what real seeds show), over ``sets`` test sets."""
    rng = np.random.default_rng([seed, 999])
    control, _ = draw(rng, sets, y, (runs, 1), 1, tau, 0.0)
    sign = np.where(y, 1.0, -1.0)
    return float(np.mean([np.std([stats.auroc(y, s + MU * sign) for s in arm], ddof=1) for arm in control]))


def main(reps: int = 200, designs: str = DESIGNS, effects: str = EFFECTS, run_sd: float = 0.05,
         gen_sd: float = 0.03, n: int = 420, positives: int = 295, control: str = "total", n_boot: int = 200,
         seed: int = 0, level: float = 0.95, out: str = None):
    """Power of the paired, generator-aware ΔAUROC test for each design ("GxC": G generators x C classifier seeds
    each; ``control`` the control arm's runs: "total" = G x C, "C", or a number) at each true effect (``effects``,
    AUROC) and under the null; ``n`` test images, ``positives`` of them positive (default: the internal test set,
    90 images / 27 positive, and the external one, 330 / 268, pooled); ``level``: the interval's (two-sided)
coverage, e.g. 0.9875 for a Bonferroni share of 0.05 over 4 synthetic arms. Writes the table to docs/benchmarks.md
    (``out`` another file; "" none)."""
    record_start()
    start = time.perf_counter()
    y = np.arange(n) < positives
    taus = (run_sd / st.norm.pdf(MU), gen_sd / st.norm.pdf(MU))
    grid = sorted(as_list(effects, float))
    if mean_auroc(MU, taus[0]) + grid[-1] >= 1:
        raise ValueError(f"effects: the control's mean AUROC {mean_auroc(MU, taus[0]):.3f} + {grid[-1]:g} is above 1")
    rows = []
    for text in as_list(designs, str):
        design = tuple(int(v) for v in text.lower().split("x"))
        runs_control = control_runs(control, *design)
        verdicts = simulate(design, runs_control, grid, reps, y, taus, n_boot, seed, level)
        rows.append(design_row(design, runs_control, verdicts))
        log(f"design {text}: null false positives {rows[-1][3]}, MDE {rows[-1][-1]}")
    minutes = (time.perf_counter() - start) / 60
    headers = ["G x C", "synthetic runs", "control runs", "null false positives", "null CI half-width",
               "null median df", "null SE / sd(Δ)", *(f"power Δ = {e:+.2f}" for e in grid), "MDE (80% power)"]
    table = show_table("power of the study design", headers, rows)
    body = describe(table, reps, n, positives, run_sd, gen_sd, n_boot, control, taus, y, minutes, level)
    write_section("power", "Power analysis of the study design", body, out)


def describe(table: str, reps: int, n: int, positives: int, run_sd: float, gen_sd: float, n_boot: int,
             control: str, taus: tuple[float, float], y: np.ndarray, minutes: float, level: float = 0.95) -> str:
    """The section's text: model, parameters, the table, how to read it."""
    spread = run_spread(y, taus[0])
    base = mean_auroc(MU, taus[0])
    return f"""How large a gain in test AUROC from synthetic training images can the study detect? Simulated with the
model in the docstring of `bench/experiments/power.py` (stats_coverage's latent-difficulty model with a generator
level added): a test set of {n} images ({positives} positive; the internal test set, 90 / 27, and the external
one, 330 / 268, pooled); the control arm's mean AUROC {base:.3f}; classifier runs differ by a run effect of AUROC sd
{run_sd:g} (tau = {taus[0]:.3f}; with the model x image noise on top, runs differ by {spread:.3f} on one test set),
and the synthetic arm's G generators by a generator effect of AUROC sd {gen_sd:g} between generators' means
(tau_g = {taus[1]:.3f}), shared by the C classifier runs trained on each. The control arm has no generator level;
its runs: {control!r} ("total": as many as the synthetic arm, G x C). The test: `stats.paired_bootstrap_auroc(y,
control, synthetic, groups_b=generator)`, the synthetic arm's training variance from its G generator means (G - 1
df), {n_boot} bootstrap resamples; "detected" = its {100 * level:g}% interval lies above 0. {reps} replicates per
design, each judged at every true effect on the same draws; a power near 50% has a Monte Carlo SE of about
{50 / np.sqrt(reps):.1f}%. The whole grid took {minutes:.1f} min on one thread.

{table}

How to read it: "power Δ = x" is the share of replicates whose interval lies above 0 when the synthetic arm's
true mean AUROC is x above the control's; "MDE" is the true gain detected with 80% power (interpolated in the grid;
"> max" when none reached it). "null false positives": replicates of equal true means whose interval excludes 0
(nominal {100 * (1 - level):.3g}%); "null CI half-width" and "null median df" are the medians of the interval's
half-width and its Welch df;
"null SE / sd(Δ)": the root mean square of the reported standard error over the actual sd of the estimated Δ
(1 = the variance estimated without bias; its Monte Carlo error is about 1 / sqrt(2 x replicates)).
With one generator (G = 1) the generators' spread cannot be estimated: the interval then holds for that
generator only, and its false positives count how often one generator's luck is called a method effect (more than
5% whenever gen_sd > 0, the more so the more classifier seeds pin that generator down). With G = 2 or 3 the
synthetic arm's generator term has only 1 or 2 df: it pulls the Welch df down and widens the interval, and more
classifier seeds per generator shrink only the part of that term that is run-to-run. Where that term dominates
(few generators, many seeds each) the false positives can exceed 5% even where the variance is estimated
without bias (SE / sd near 1): when a 1- or 2-df estimate comes out small by chance, the Welch df computed from it
comes out large too, and the t quantile small. The
pooled test set is modelled as one population; a shift between the internal and the external images, or an
effect that differs between them, is not in the model.
"""


if __name__ == "__main__":
    fire.Fire(main)
