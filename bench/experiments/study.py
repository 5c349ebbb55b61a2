"""The pre-registered usefulness study (docs/study-protocol.md): generators retrained G times per recipe and real
fraction, C classifier seeds per generator, the control arms with G x C seeds, every run tested on the internal
and the external test images; the verdict by ``cxrgan.classify.verdict`` on the pooled test images, each synthetic
arm's runs grouped by generator.

The study outlives a session. What each finished job leaves is small and is kept in a results folder committed
with the project (``docs/study``: each classifier arm's ``metrics.json`` and ``predictions.npz``, each generator's
``generator.json`` and its samples' image metrics in both feature spaces); the bulky rest (datasets, checkpoints,
samples) lives in a work folder. ``train`` runs every job the results folder lacks, highest priority first
(``plan``: the primary real fraction's generators and arms before the rest), ``--workers`` side by side with one
CPU thread each; a classifier arm waits for its generator's samples; a generator is retrained only while one of
its arms is unfinished. Generators train for a fixed number of images (``--kimg``), so a result does not depend
on how loaded the machine was. ``report`` writes the "study" section of docs/benchmarks.md and the figure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the machine is shared

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (ROOT, SPACES, as_list, build_feature_network, cpu_model, feature_network, log,  # noqa: E402
                    nih_mini_and_external, record_start, show_table, work_dir, write_section)

RESULTS = ROOT / "docs" / "study"
CONTROLS = {"real": {}, "real + oversampling": {"control": "oversample"},
            "real + augmentation": {"control": "augment"}}
MODES = {"mix": "real + synthetic", "pretrain": "pretrain on synthetic, fine-tune on real"}
# the classifier protocol (docs/study-protocol.md); the variance-cutting options are fixed there before the run
CLASSIFIER = {"epochs": 15, "patience": 5, "size": 64, "lr": 3e-4, "batch": 32, "n_boot": 100}
# a 25% fraction's epoch is about 80 images (5 s): an epoch checkpoint, grid and loss plot each epoch would cost a
# large share of the training time (last.pt, to resume from, is still written every epoch)
CKPT_EVERY = 25
# the image metrics of each generator's samples, per class, in the space used so far and in the cxr network's
QUALITY_KEYS = ("fid", "kid_mean", "precision", "recall", "pixel_diversity")


# ---- the plan: every job, its folder relative to the work and results folders, and what it waits for ----

class Design:
    """The study's plan: which folders exist for which arm (``train``, ``plan`` and ``report`` read it)."""

    def __init__(self, fractions, recipes, generators: int, seeds: int, ratios, modes, kimg: float, n: int,
                 options: dict | None, primary: float = 0.25, secondary_generators: int | None = None):
        self.fractions, self.recipes = as_list(fractions, float), as_list(recipes, str)
        self.c, self.ratios, self.modes = seeds, as_list(ratios, float), as_list(modes, str)
        self.kimg, self.n, self.options = kimg, n, options or {}
        self.primary, self.g_primary = primary, generators
        self.g_secondary = generators if secondary_generators is None else secondary_generators

    def g(self, f: float) -> int:
        """Generators per recipe at real fraction ``f``: the primary fraction has more (the power analysis)."""
        return self.g_primary if f == self.primary else self.g_secondary

    @staticmethod
    def gen_folder(f: float, recipe: str, g: int) -> Path:
        return Path(f"fraction-{f:g}") / f"{recipe}-gen{g}"

    @staticmethod
    def control_folder(f: float, arm: str, ratio: float) -> Path:
        return Path(f"fraction-{f:g}") / f"ratio-{ratio:g}" / arm.replace(" + ", "+")

    def synthetic_folders(self, f: float, recipe: str, mode: str, ratio: float) -> list[Path]:
        return [Path(f"fraction-{f:g}") / f"ratio-{ratio:g}" / f"{mode}-{recipe}-gen{g}" for g in range(self.g(f))]

    def cells(self) -> list[tuple[float, float]]:
        """(fraction, ratio): the primary ratio 1 at every fraction (the primary fraction first), the other ratios
        at the primary fraction only."""
        fractions = sorted(self.fractions, key=lambda f: f != self.primary)
        return [(f, 1.0) for f in fractions] + [(self.primary, r) for r in self.ratios if r != 1 and
                                                self.primary in self.fractions]


def plan(d: Design, data: Path, extra: Path) -> list[dict]:
    """Every job in priority order: per cell, generator g of each recipe, then its arms; the control arms after
    the first generators' arms (so every cell's verdict has its controls early). A job: kind, key (its folder,
    relative), needs (the keys it waits for), and what its kind needs to run."""
    base = {"data": str(data), "test_extra": f"{extra}:test", **CLASSIFIER, **d.options}
    jobs: list[dict] = [{"kind": "features", "key": f"features/{s}", "needs": [], "space": s} for s in SPACES]
    for f, ratio in d.cells():
        common = {**base, "real_fraction": f, "synthetic_ratio": ratio}
        controls = []
        for arm, opts in CONTROLS.items():
            if arm == "real" and ratio != 1:
                continue  # real alone adds nothing: one arm per fraction
            folder = d.control_folder(f, arm, 1.0 if arm == "real" else ratio)
            cfg = {**common, **opts, "seeds": d.g(f) * d.c}
            if arm == "real":
                cfg.pop("synthetic_ratio")
            controls.append({"kind": "classifier", "key": str(folder), "needs": [], "config": cfg})
        for g in range(d.g(f)):
            for recipe in d.recipes:
                gen = str(d.gen_folder(f, recipe, g))
                if ratio == 1:
                    jobs.append({"kind": "generator", "key": gen, "needs": [], "recipe": recipe, "seed": g,
                                 "fraction": f, "data": str(data), "kimg": d.kimg, "n": d.n,
                                 "primary_arms": [str(d.synthetic_folders(f, recipe, m, 1.0)[g]) for m in d.modes]})
                    jobs.append({"kind": "quality", "key": f"{gen}/quality", "generator": gen, "data": str(data),
                                 "needs": [gen, *(f"features/{s}" for s in SPACES)]})
                for mode in d.modes if ratio == 1 else ["mix"]:
                    cfg = {**common, "seeds": d.c, "synthetic_mode": mode, "synthetic": f"{gen}/samples.h5"}
                    if mode == "pretrain":  # pretraining uses every sampled image, not a count-matched share
                        cfg.pop("synthetic_ratio")
                        cfg["synthetic_per_class"] = d.n
                    jobs.append({"kind": "classifier", "key": str(d.synthetic_folders(f, recipe, mode, ratio)[g]),
                                 "needs": [gen], "config": cfg})
            if g == 0:
                jobs += controls
    return jobs


def finished(job: dict, results: Path) -> bool:
    """An arm is done when its metrics.json is in the results folder, a generator's scoring when its
    generator.json is (generators and feature networks are never kept: they are rebuilt when needed)."""
    if job["kind"] == "classifier":
        return (results / job["key"] / "metrics.json").is_file()
    return job["kind"] == "quality" and (results / job["generator"] / "generator.json").is_file()


def to_run(jobs: list[dict], results: Path, work: Path) -> list[dict]:
    """The jobs still needed: unfinished arms and scorings, the generators those wait for (unless their samples
    are in the work folder), and the feature networks a scoring needs."""
    rest = [j for j in jobs if j["kind"] in ("classifier", "quality") and not finished(j, results)]
    wanted = {n for j in rest for n in j["needs"]}
    gens = [j for j in jobs if j["kind"] == "generator" and j["key"] in wanted and
            not (work / j["key"] / "samples.h5").is_file()]
    keep = {j["key"] for j in rest + gens} | {n for j in rest if j["kind"] == "quality" for n in j["needs"]}
    kept = [j for j in jobs if j["key"] in keep]
    # a generator goes just before the first remaining job that waits for it: one whose primary arms are all
    # finished and that only the secondary cells still need is not retrained ahead of the primary cell's jobs
    by_key, placed, ordered = {j["key"]: j for j in gens}, set(), []
    for j in kept:
        if j["kind"] == "generator":
            continue
        for n in j["needs"]:
            if n in by_key and n not in placed:
                ordered.append(by_key[n]), placed.add(n)
        ordered.append(j)
    return ordered


# ---- the jobs (each in a worker process, one CPU thread) ----

def run_job(job: dict, work: str, results: str) -> str:
    import torch

    torch.set_num_threads(1)
    work, results = Path(work), Path(results)
    {"features": features_job, "generator": generator_job, "quality": quality_job,
     "classifier": classifier_job}[job["kind"]](
        job, work, results)
    return job["key"]


def features_job(job: dict, work: Path, results: Path) -> None:
    """One of the two spaces of the image metrics (common.build_feature_network), trained once per work folder."""
    build_feature_network(work, job["space"])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_same_samples(samples: Path, record: Path, primary_done: bool = False) -> str | None:
    """A generator retrained for arms that still need its samples (its work folder was lost) must give the samples
    its scoring and finished arms used (generator.json's samples_sha256); on another CPU it may not. While one of
    its primary (ratio 1) arms is unfinished the study then stops instead of mixing two versions of one generator.
    Once they are all finished, only secondary arms are left to use it (docs/study-protocol.md, "two machines",
    item 4): the retrained version is accepted, and its sha256 is returned for the record."""
    if record.is_file():
        want, got = json.loads(record.read_text()).get("samples_sha256"), sha256(samples)
        if want and got != want and primary_done:
            return got
        if want and got != want:
            samples.unlink()
            raise SystemExit(f"error: {samples} differs from the samples recorded in {record} (sha256 {want[:12]}…): "
                             "the retrained generator is not the one its finished arms used (another CPU or "
                             "library?); run the study where it started, or delete that generator's results to redo "
                             "its arms")


def generator_job(job: dict, work: Path, results: Path) -> None:
    """Train (resuming) one generator to its kimg and sample it once; what it trained is kept beside the samples
    (trained.json) for its scoring."""
    import torch

    from cxrgan.fileio import write_json_atomic
    from cxrgan.generative.sample import resolve_generators, sample_to_file
    from cxrgan.generative.train import GanConfig, train

    folder = work / job["key"]
    ledger = folder / "training-seconds.json"  # over resumed calls (a call killed midway is not counted)
    result = train(GanConfig(data=job["data"], out=str(folder / "gan"), recipe=job["recipe"], seed=job["seed"],
                             real_fraction=job["fraction"], kimg=job["kimg"], device="cpu", ckpt_every=CKPT_EVERY))
    seconds = json.loads(ledger.read_text())["seconds"] if ledger.is_file() else 0.0
    if result.get("trained"):
        seconds += result["seconds"]
        write_json_atomic(ledger, {"seconds": seconds})
    summary = json.loads((folder / "gan" / "summary.json").read_text())
    gens = resolve_generators(str(folder / "gan"), folder, [0, 1], torch.device("cpu"))
    sample_to_file(folder / "samples.h5", gens, job["n"], job["seed"], torch.device("cpu"))
    primary_done = all((results / a / "metrics.json").is_file() for a in job.get("primary_arms", []))
    other = check_same_samples(folder / "samples.h5", results / job["key"] / "generator.json", primary_done)
    if other:  # a second version, for the secondary arms only: recorded beside the first (whose arms are done)
        write_json_atomic(results / job["key"] / f"retrained-{other[:12]}.json", {
            "samples_sha256": other, "cpu": cpu_model(), "why": "work folder lost; retrained for secondary arms",
            "trained": {"kimg": summary["kimg"], "epochs": summary["epochs"]}})
    write_json_atomic(folder / "trained.json", {
        **{k: job[k] for k in ("recipe", "seed", "fraction", "kimg", "n")},
        "trained": {"kimg": summary["kimg"], "epochs": summary["epochs"], "seconds": seconds,
                    "img_per_s": summary["kimg"] * 1000 / seconds if seconds else None}})


def quality_job(job: dict, work: Path, results: Path) -> None:
    """Score a generator's samples against the internal real test images in both spaces (the audit of copies in
    the cxr run); its record (what it trained, the samples' hash, the metrics per class) goes to the results
    folder as generator.json, with each space's fid_is summary beside it."""
    from cxrgan.fileio import write_json_atomic
    from cxrgan.metrics.evaluate import QualityConfig, evaluate

    folder, keep = work / job["generator"], results / job["generator"]
    samples = folder / "samples.h5"
    record = {**json.loads((folder / "trained.json").read_text()), "samples_sha256": sha256(samples), "quality": {}}
    keep.mkdir(parents=True, exist_ok=True)
    for space in SPACES:
        net = feature_network(work, space)
        summary = evaluate(QualityConfig(real=f"{job['data']}:test", fake=str(samples), train=f"{job['data']}:train",
                                         out=str(folder / f"quality-{space}.json"), features=f"{space}:{net}",
                                         audit=space == "cxr", cache="", device="cpu", seed=0, overwrite=True))
        shutil.copyfile(folder / f"quality-{space}.json", keep / f"quality-{space}.json")
        record["quality"][space] = {"network_sha256": sha256(net), "per_class": {
            name: {k: v.get(k) for k in QUALITY_KEYS} for name, v in summary.get("per_class", {}).items()}}
    write_json_atomic(keep / "generator.json", record)


def classifier_job(job: dict, work: Path, results: Path) -> None:
    """One train_resnet arm in the work folder; its metrics.json and predictions.npz copied to the results folder
    (metrics.json last: it marks the arm finished)."""
    from cxrgan.classify.train import ClassifierConfig, run

    folder, keep = work / job["key"], results / job["key"]
    cfg = dict(job["config"])
    if "synthetic" in cfg:
        cfg["synthetic"] = str(work / cfg["synthetic"])
    if not (folder / "metrics.json").is_file():
        run(ClassifierConfig(out=str(folder), overwrite=True, device="cpu", **cfg))
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("predictions.npz", "metrics.json"):
        shutil.copyfile(folder / name, keep / f".{name}.tmp")
        os.replace(keep / f".{name}.tmp", keep / name)


def schedule(jobs: list[dict], workers: int, work: Path, results: Path, fn=None) -> list[str]:
    """Run ``jobs`` ``workers`` at a time (``fn(job, work, results)``, default ``run_job``), always the first in
    plan order whose needs are met; a job whose need failed is skipped. Returns the keys that failed or were
    skipped."""
    keys = {j["key"] for j in jobs}
    pending, running, failed = list(jobs), {}, []
    log(f"{len(jobs)} job(s), {workers} at a time")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        while pending or running:
            waiting = keys - {j["key"] for j in pending} - set(running.values()) - set(failed)  # done
            for j in [j for j in pending if any(n in failed for n in j["needs"])]:
                log(f"skipped {j['key']}: it needs {', '.join(n for n in j['needs'] if n in failed)}, which failed")
                pending.remove(j), failed.append(j["key"])
            while len(running) < max(1, workers):
                ready = next((j for j in pending if all(n not in keys or n in waiting for n in j["needs"])), None)
                if ready is None:
                    break
                pending.remove(ready)
                running[pool.submit(fn or run_job, ready, str(work), str(results))] = ready["key"]
                log(f"started {ready['kind']} {ready['key']}")
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                try:
                    fut.result()
                    log(f"finished {key} ({len(pending)} waiting, {len(running)} running)")
                except Exception:  # noqa: BLE001 - one failed job must not stop the study; it is reported
                    failed.append(key)
                    log(f"FAILED {key}:\n{traceback.format_exc()}")
    return failed


def train(fractions: str = "0.25,0.1,0.5,1", recipes: str = "limited,diffusion", generators: int = 6,
          secondary_generators: int = 2, seeds: int = 3, ratios: str = "1,0.5,2,4", modes: str = "mix,pretrain",
          primary: float = 0.25, kimg: float = 33, n: int = 500, workers: int = 2, options: dict = None,
          only: str = None, workdir: str = None, results: str = None, dry_run: bool = False):
    """Run every job the results folder lacks (``options``: train_resnet options fixed by the protocol, e.g.
    '{"select": "last", "ema": 0.99}'; ``only``: run just the jobs whose key starts with this, e.g. fraction-0.25/;
    ``dry_run``: list them)."""
    work, results = work_dir(workdir, "study"), Path(results or RESULTS)
    d = Design(fractions, recipes, generators, seeds, ratios, modes, kimg, n, options, primary, secondary_generators)
    data, extra = (work / "nih-mini-64.h5", work / "external-test-64.h5") if dry_run else nih_mini_and_external(work)
    jobs = to_run(plan(d, data, extra), results, work)
    if only:
        jobs = [j for j in jobs if j["key"].startswith(only) or j["kind"] == "features" or
                any(k["key"].startswith(only) and j["key"] in k["needs"] for k in jobs)]
    if dry_run:
        for j in jobs:
            print(f"{j['kind']:10} {j['key']}" + (f"  (after {', '.join(j['needs'])})" if j["needs"] else ""))
        return
    failed = schedule(jobs, workers, work, results)
    if failed:
        raise SystemExit(f"{len(failed)} job(s) failed: {', '.join(failed)} (the log above has each traceback)")


# ---- the report: from the results folder only ----

def arm_auroc(folders: list[Path], level: float = 0.95) -> dict:
    """An arm's mean pooled AUROC with its seed-aware interval (runs grouped by generator when several folders)."""
    from cxrgan.classify import stats, verdict

    _, y, scores, groups = verdict.combined_predictions(folders)
    res = stats.bootstrap_ci(y, scores, n_boot=1000, seed=0, level=level, groups=groups)["auroc"]
    return {**res, "mean": float(np.mean([stats.auroc(y, s) for s in scores]))}


def quality_rows(d: Design, results: Path) -> list[list[str]]:
    """Each recipe's samples, per real fraction and class: mean ± sd over its finished generators, both spaces.
    The feature networks are rebuilt in each work folder and differ bit for bit between machines, so generators
    scored in different networks (their sha256) are summarised in separate rows, never averaged together."""
    rows = []
    for f in sorted(d.fractions):
        for recipe in d.recipes:
            by_networks: dict[str, list] = {}
            for g in range(d.g(f)):
                if (p := results / d.gen_folder(f, recipe, g) / "generator.json").is_file():
                    r = json.loads(p.read_text())
                    nets = " / ".join(r["quality"][s].get("network_sha256", "?")[:8] for s in SPACES)
                    by_networks.setdefault(nets, []).append(r)
            for nets, records in by_networks.items():
                rows += _quality_rows(f, recipe, nets, records)
    return rows


def _quality_rows(f: float, recipe: str, nets: str, records: list[dict]) -> list[list[str]]:
    """One row per class for ``records``, generators scored in the same feature networks ``nets``."""
    rows = []
    for cls in records[0]["quality"][SPACES[0]]["per_class"]:
        cells = []
        for space in SPACES:
            for k in ("kid_mean", "precision", "recall"):
                v = [r["quality"][space]["per_class"][cls][k] for r in records]
                v = [x for x in v if x is not None]
                cells.append(f"{np.mean(v):.3g} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2g}" if v else "–")
        pd = [r["quality"][SPACES[0]]["per_class"][cls]["pixel_diversity"] for r in records]
        rows.append([f"{f:g}", recipe, nets, cls, str(len(records)),
                     f"{np.mean([r['trained'].get('kimg', np.nan) for r in records]):.1f}", *cells, f"{np.mean(pd):.3f}"])
    return rows


def _draw_arms(ax, arms: dict, xs: list[float], results: Path, colors: dict) -> bool:
    """One line per arm (name -> folders at x), its finished points only, 95% seed-aware intervals; points of
    neighbouring arms are offset slightly so that their intervals stay readable (the x axis is logarithmic)."""
    drawn = False
    for i, (name, folders_at) in enumerate(arms.items()):
        pts = []
        for x in xs:
            folders = [results / p for p in folders_at(x)]
            if all((p / "metrics.json").is_file() for p in folders):
                a = arm_auroc(folders)
                pts.append((x * (1 + 0.02 * (i - len(arms) / 2)), a["mean"], *a["ci95"]))
        if pts:
            x, m, lo, hi = map(np.array, zip(*pts))
            ax.errorbar(x, m, yerr=[m - lo, hi - m], marker="o", capsize=3, label=name, color=colors[name])
            drawn = True
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_ylabel("test AUROC (internal + external)")
    ax.grid(alpha=0.3)
    return drawn


def figure(d: Design, results: Path, out: Path) -> bool:
    """Left: AUROC (pooled test images) against the real fraction at ratio 1, one line per arm. Right (when the
    design has other ratios): the ratio sweep at the primary fraction, the mixing arms and the count-matched
    controls against the synthetic-to-real ratio, the real arm as a band. 95% seed-aware intervals; only the
    points whose arm is finished. False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = len(d.ratios) > 1 and d.primary in d.fractions
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(12 if sweep else 7, 4.5), squeeze=False)
    arms = {arm: lambda f, arm=arm: [d.control_folder(f, arm, 1.0)] for arm in CONTROLS}
    for mode in d.modes:
        for recipe in d.recipes:
            arms[f"{MODES[mode]} ({recipe})"] = lambda f, m=mode, r=recipe: d.synthetic_folders(f, r, m, 1.0)
    colors = {name: f"C{i}" for i, name in enumerate(arms)}  # an arm keeps its colour in both panels
    ax = axes[0, 0]
    drawn = _draw_arms(ax, arms, sorted(d.fractions), results, colors)
    ax.set_xticks(sorted(d.fractions), [f"{100 * f:g}%" for f in sorted(d.fractions)])
    ax.set_xlabel("real training patients used (synthetic-to-real ratio 1)")
    ax.legend(fontsize=7)
    if sweep:
        ax = axes[0, 1]
        real = [results / d.control_folder(d.primary, "real", 1.0)]
        if (real[0] / "metrics.json").is_file():
            a = arm_auroc(real)
            ax.axhspan(*a["ci95"], color=colors["real"], alpha=0.1)
            ax.axhline(a["mean"], color=colors["real"], lw=1, label="real (ratio 0; 95% interval)")
        ratio_arms = {arm: lambda r, arm=arm: [d.control_folder(d.primary, arm, r)] for arm in CONTROLS
                      if arm != "real"}
        for recipe in d.recipes:
            ratio_arms[f"{MODES['mix']} ({recipe})"] = lambda r, rc=recipe: d.synthetic_folders(d.primary, rc, "mix", r)
        drawn = _draw_arms(ax, ratio_arms, sorted(d.ratios), results, colors) or drawn
        ax.set_xticks(sorted(d.ratios), [f"{r:g}" for r in sorted(d.ratios)])
        ax.set_xlabel(f"added images per real image (real fraction {100 * d.primary:g}%)")
        ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


TEST_SETS = {"pooled": None, "internal": (0,), "external": (1,)}  # verdict ``sets``: which test images count


def comparison_row(f: float, ratio: float, test: str, arm: str, control: str, c: dict) -> list[str]:
    lo, hi = c["ci95"]
    return [f"{f:g}", f"{ratio:g}", f"{test} ({c['n_test']})", arm, control, f"{c['auroc_control']:.3f}",
            f"{c['auroc_synthetic']:.3f}", f"{c['delta_auroc']:+.3f}", f"[{lo:+.3f}, {hi:+.3f}]",
            f"{c['p_value']:.3g}", f"{(hi - lo) / 2:.3f}"]


def cell_arms(d: Design, results: Path, f: float, ratio: float) -> tuple[dict, dict]:
    """A cell's control arms (name -> folder) and synthetic arms (name -> one folder per generator)."""
    controls = {arm: results / d.control_folder(f, arm, 1.0 if arm == "real" else ratio) for arm in CONTROLS}
    synthetic = {f"{MODES[mode]} ({recipe})": [results / p for p in d.synthetic_folders(f, recipe, mode, ratio)]
                 for recipe in d.recipes for mode in (d.modes if ratio == 1 else ["mix"])}
    return controls, synthetic


def primary_analysis(d: Design, results: Path, level: float) -> tuple[list, list, list[str]]:
    """The primary cell: every synthetic arm against every control on the pooled, internal and external test
    images (rows; the pooled ones decide), pretraining against mixing per recipe (rows), and the decision lines
    with the reported primary number (best synthetic arm against best control, at ``level`` and 95%)."""
    from cxrgan.classify import verdict

    controls, synthetic = cell_arms(d, results, d.primary, 1.0)
    rows, lines, pooled = [], [], {}
    for test, sets in TEST_SETS.items():
        for arm, folders in synthetic.items():
            res = verdict.primary(folders, controls, seed=0, level=level, sets=sets)
            rows += [comparison_row(d.primary, 1.0, test, arm, name, c) for name, c in res["comparisons"].items()]
            if sets is None:
                pooled[arm] = res
                lines.append(f"- {arm}: **{res['decision']}** (against the best control, {res['best_control']}: "
                             f"ΔAUROC {res['comparisons'][res['best_control']]['delta_auroc']:+.3f}, half-width "
                             f"{res['half_width']:.3f})")
    said = verdict.overall([r["decision"] for r in pooled.values()])
    lines.insert(0, f"- **Verdict by the protocol's rule over the {len(pooled)} synthetic arms: "
                    f"{'synthetic data ' + said if said != verdict.UNDECIDED else said}**")
    best = max(pooled, key=lambda a: next(iter(pooled[a]["comparisons"].values()))["auroc_synthetic"])
    control = pooled[best]["best_control"]
    at = {lv: verdict.paired_on_shared_images(controls[control], synthetic[best], 2000, 0, lv) for lv in (level, .95)}
    lines.append(f"- Primary number: the best synthetic arm, {best}, against the best control, {control}: "
                 f"ΔAUROC {at[level]['delta_auroc']:+.3f}, {100 * level:g}% CI [{at[level]['ci95'][0]:+.3f}, "
                 f"{at[level]['ci95'][1]:+.3f}], 95% CI [{at[.95]['ci95'][0]:+.3f}, {at[.95]['ci95'][1]:+.3f}]; "
                 f"half-width {(at[level]['ci95'][1] - at[level]['ci95'][0]) / 2:.3f} (target ≤ 0.05)")
    versus = []
    for recipe in d.recipes:
        mix, pre = (synthetic.get(f"{MODES[m]} ({recipe})") for m in ("mix", "pretrain"))
        if mix and pre:
            c = verdict.paired_on_shared_images(mix, pre, 2000, 0, 0.95)
            versus.append(comparison_row(d.primary, 1.0, "pooled", f"{MODES['pretrain']} ({recipe})",
                                         f"{MODES['mix']} ({recipe})", c))
    return rows, versus, lines


def arm_level_rows(d: Design, results: Path, cells: list[tuple[float, float]]) -> list[list[str]]:
    """Each arm of the finished cells: its runs' AUROC on the internal and the external test images alone (mean ±
    sd over runs, every generator's runs together) and pooled. Descriptive: where an arm stands on each test set."""
    from cxrgan.classify import stats, verdict

    rows = []
    for f, ratio in cells:
        controls, synthetic = cell_arms(d, results, f, ratio)
        for arm, folders in [*controls.items(), *synthetic.items()]:
            if arm == "real" and ratio != 1:
                continue  # the ratio-1 real arm, shared by every ratio: listed once
            aurocs = {}
            for test, sets in TEST_SETS.items():
                _, y, scores, _ = verdict.combined_predictions(folders, sets)
                aurocs[test] = [stats.auroc(y, s) for s in scores]
            rows.append([f"{f:g}", f"{ratio:g}", arm, str(len(aurocs["pooled"])),
                         *(f"{np.mean(a):.3f} ± {np.std(a, ddof=1) if len(a) > 1 else 0:.3f}"
                           for a in (aurocs["internal"], aurocs["external"], aurocs["pooled"]))])
    return rows


def progress_rows(d: Design, results: Path) -> tuple[list, list]:
    """Per cell: generators and arms finished; and the cells whose arms are all finished."""
    rows, complete = [], []
    for f, ratio in d.cells():
        controls, synthetic = cell_arms(d, results, f, ratio)
        folders = list(controls.values()) + [p for v in synthetic.values() for p in v]
        done = sum((p / "metrics.json").is_file() for p in folders)
        gens = sum((results / d.gen_folder(f, r, g) / "generator.json").is_file() for r in d.recipes
                   for g in range(d.g(f)))
        rows.append([f"{f:g}", f"{ratio:g}", f"{gens} / {len(d.recipes) * d.g(f)}" if ratio == 1 else "(shared)",
                     f"{done} / {len(folders)}"])
        if done == len(folders):
            complete.append((f, ratio))
    return rows, complete


def report(fractions: str = "0.25,0.1,0.5,1", recipes: str = "limited,diffusion", generators: int = 6,
           secondary_generators: int = 2, seeds: int = 3, ratios: str = "1,0.5,2,4", modes: str = "mix,pretrain",
           level: float = 0.9875, primary: float = 0.25, results: str = None, out: str = None,
           figure_path: str = "docs/figures/study-efficiency.png"):
    """The study's progress, tables, verdict and figure from the results folder (``level``: the per-arm interval
    of the decision, Bonferroni over the synthetic arms). A cell's comparisons are shown once all its arms are
    done (no interim verdict)."""
    from cxrgan.classify import verdict

    record_start()
    results = Path(results or RESULTS)
    d = Design(fractions, recipes, generators, seeds, ratios, modes, 0, 0, None, primary, secondary_generators)
    progress, complete = progress_rows(d, results)
    rows, versus, lines = primary_analysis(d, results, level) if (primary, 1.0) in complete else ([], [], [])
    for f, ratio in [c for c in complete if c != (primary, 1.0)]:
        controls, synthetic = cell_arms(d, results, f, ratio)
        for arm, folders in synthetic.items():
            res = verdict.primary(folders, controls, seed=0, level=level)
            rows += [comparison_row(f, ratio, "pooled", arm, name, c) for name, c in res["comparisons"].items()]
    headers = ["real fraction", "ratio", "test images", "synthetic arm", "control", "control AUROC",
               "synthetic AUROC", "ΔAUROC", f"{100 * level:g}% CI", "p", "half-width"]
    pooled = [r for r in rows if r[2].startswith("pooled")]
    table = show_table("study", headers, pooled) if pooled else "No cell is finished yet."
    per_set = [r for r in rows if not r[2].startswith("pooled")]
    levels = arm_level_rows(d, results, complete)
    quality = quality_rows(d, results)
    quality_table = show_table("quality", ["real fraction", "recipe", "feature networks", "class", "generators", "kimg",
                                           *[f"{k} ({s})" for s in ("ResNet-18 space", "cxr space")
                                             for k in ("KID", "precision", "recall")], "pixel diversity"],
                               quality) if quality else "No generator is finished yet."
    drew = figure(d, results, ROOT / figure_path)
    where = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    body = (f"The pre-registered study of docs/study-protocol.md, from the finished runs kept in `{where}`: "
            f"{d.g_primary} generator(s) per recipe at real fraction {primary:g} and {d.g_secondary} at the others, "
            f"{d.c} classifier seed(s) per generator, control arms with as many runs as a synthetic arm; "
            f"{100 * level:g}% seed-aware intervals, each synthetic arm's runs grouped by generator; the pooled "
            f"test images (internal + external) decide. A cell's comparisons appear once every arm of it is "
            f"finished.") + f"""

Progress (arms: the control and synthetic train_resnet folders of the cell):

{show_table("progress", ["real fraction", "ratio", "generators finished", "arms finished"], progress)}

{table}

Decisions at real fraction {primary:g} (ratio 1), by the protocol's rule:

{chr(10).join(lines) or "- not finished yet: no decision"}
""" + (f"""
The primary comparisons on each test set alone (secondary; the same intervals):

{show_table("per test set", headers, per_set)}
""" if per_set else "") + (f"""
Pretraining against mixing, per recipe (secondary; 95% intervals, pooled test images):

{show_table("pretrain vs mix", [*headers[:8], "95% CI", "p", "half-width"], versus)}
""" if versus else "") + (f"""
Each arm's AUROC on each test set alone and pooled (mean ± sd over its runs, every generator's runs together;
descriptive: the pooled AUROC is lower than either set's when the two sets' scores sit at different levels):

{show_table("arm levels", ["real fraction", "ratio", "arm", "runs", "internal AUROC", "external AUROC",
                           "pooled AUROC"], levels)}
""" if levels else "") + f"""
Image metrics of each generator's 500 samples per class against the internal real test images, per class (mean ±
sd over the finished generators; the ResNet-18 space is the one of the earlier quality tables, the cxr space is the
cxr network's, docs/benchmarks.md "A chest X-ray feature space"). Both networks are retrained in each work folder
and are not bit-identical across machines: "feature networks" names the pair (the first 8 hex digits of each
one's sha256, ResNet-18 / cxr) a generator was scored in, and only rows with the same pair are comparable:

{quality_table}
""" + (f"\n![AUROC against the real fraction, and against the synthetic-to-real ratio]"
         f"({os.path.relpath(ROOT / figure_path, ROOT / 'docs')})\n" if drew else "")
    write_section("study", "The usefulness study (pre-registered)", body, out)


def machine_check(first: str, second: str) -> dict:
    """Runs of one arm with the same seeds trained on two machines (two train_resnet folders): their pooled test
    AUROC seed by seed, the paired difference, and the first folder's spread between seeds, to show whether the
    machine shifts results beyond a seed change (docs/study-protocol.md, "two machines")."""
    from scipy import stats as st

    from cxrgan.classify import stats, verdict

    runs = []
    for folder in (first, second):
        names, y, scores, _ = verdict.combined_predictions(Path(folder))
        seeds = [r["seed"] for r in json.loads((Path(folder) / "metrics.json").read_text())["per_seed"]]
        runs.append(({n: i for i, n in enumerate(names)}, y, scores, seeds))
    (index_a, y_a, a, seeds_a), (index_b, y_b, b, seeds_b) = runs
    if sorted(index_a) != sorted(index_b):
        raise SystemExit("error: the two folders were evaluated on different test images; use the same test sets")
    order = np.array([index_b[n] for n in sorted(index_a, key=index_a.get)])  # the second's images in the first's order
    y_b, b = y_b[order], b[:, order]
    if not np.array_equal(y_a, y_b):
        raise SystemExit("error: the two folders label the same test images differently; use the same test sets")
    shared = [s for s in seeds_b if s in seeds_a]
    if len(shared) < 2:
        raise SystemExit("error: the two folders share fewer than 2 seeds; train the same seeds on both machines")
    auc_a = np.array([stats.auroc(y_a, a[seeds_a.index(s)]) for s in shared])
    auc_b = np.array([stats.auroc(y_b, b[seeds_b.index(s)]) for s in shared])
    diff = auc_b - auc_a
    every_a = np.array([stats.auroc(y_a, s) for s in a])
    out = {"seeds": shared, "first": auc_a.round(4).tolist(), "second": auc_b.round(4).tolist(),
           "mean_difference": float(diff.mean()), "se_difference": float(diff.std(ddof=1) / np.sqrt(len(diff))),
           "p_paired_t": float(st.ttest_rel(auc_b, auc_a).pvalue), "correlation": float(np.corrcoef(auc_a, auc_b)[0, 1]),
           "sd_between_seeds_first": float(every_a.std(ddof=1)), "n_test": int(len(y_a))}
    return out


if __name__ == "__main__":
    fire.Fire({"train": train, "report": report, "machine-check": machine_check})
