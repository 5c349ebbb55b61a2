"""The pre-registered usefulness study (docs/study-protocol.md): generators retrained G times per recipe and real
fraction, C classifier seeds per generator, the control arms with G x C seeds, every run tested on the internal
and the external test images; the verdict by ``cxrgan.classify.verdict`` on the pooled test images, each synthetic
arm's runs grouped by generator.

Everything is resumable and kept in the work folder: a generator resumes from its last checkpoint and is sampled
once; a classifier arm is one train_resnet run folder, skipped when its metrics.json exists. ``train`` runs the
stages (``--stage generators|classifiers|all``; ``--workers`` jobs side by side, one CPU thread each), ``report``
writes the "study" section of docs/benchmarks.md and the figure from whatever is finished.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the machine is shared

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (as_list, log, nih_mini_and_external, record_start, show_table, train_for,  # noqa: E402
                    work_dir, write_section)

CONTROLS = {"real": {}, "real + oversampling": {"control": "oversample"},
            "real + augmentation": {"control": "augment"}}
MODES = {"mix": "real + synthetic", "pretrain": "pretrain on synthetic, fine-tune on real"}
# the classifier protocol (docs/study-protocol.md); the variance-cutting options are fixed there before the run
CLASSIFIER = {"epochs": 15, "patience": 5, "size": 64, "lr": 3e-4, "batch": 32, "n_boot": 100}


def generator_job(job: dict) -> str:
    """Train (resuming) one generator for its minutes, then sample it once: its samples file."""
    import torch

    from cxrgan.generative.recipes import RECIPES
    from cxrgan.generative.sample import resolve_generators, sample_to_file

    torch.set_num_threads(1)
    folder, out = Path(job["folder"]), Path(job["folder"]) / "samples.h5"
    if out.is_file():
        return str(out)
    runs = [(folder / "gan", None)] if RECIPES[job["recipe"]].conditional else \
        [(folder / f"gan-c{c}", c) for c in (0, 1)]
    for run_dir, cls in runs:
        train_for(dict(data=job["data"], out=str(run_dir), recipe=job["recipe"], cls=cls, seed=job["seed"],
                       real_fraction=job["fraction"], device="cpu"), job["minutes"], chunk=job["chunk"],
                  ledger=run_dir.parent / f"{run_dir.name}-budget.json")
    gens = resolve_generators(",".join(str(r) for r, _ in runs), folder, [0, 1], torch.device("cpu"))
    sample_to_file(out, gens, job["n"], job["seed"], torch.device("cpu"))
    return str(out)


def classifier_job(job: dict) -> str:
    """One train_resnet run folder (skipped when finished)."""
    import torch

    from cxrgan.classify.train import ClassifierConfig, run

    torch.set_num_threads(1)
    if not (Path(job["out"]) / "metrics.json").is_file():
        run(ClassifierConfig(overwrite=True, device="cpu", **job["config"]))
    return job["out"]


def _pool(fn, jobs: list[dict], workers: int, what: str) -> None:
    log(f"{len(jobs)} {what} job(s), {workers} at a time")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for i, done in enumerate(pool.map(fn, jobs)):
            log(f"{what} {i + 1}/{len(jobs)}: {done}")


class Design:
    """The study's plan: which folders exist for which arm (both stages and the report read it)."""

    def __init__(self, work: Path, fractions, recipes, generators: int, seeds: int, ratios, modes, minutes: float,
                 n: int, options: dict, primary: float = 0.25, secondary_generators: int | None = None):
        self.work, self.fractions, self.recipes = work, as_list(fractions, float), as_list(recipes, str)
        self.c, self.ratios, self.modes = seeds, as_list(ratios, float), as_list(modes, str)
        self.minutes, self.n, self.options = minutes, n, options or {}
        self.primary, self.g_primary = primary, generators
        self.g_secondary = generators if secondary_generators is None else secondary_generators

    def g(self, f: float) -> int:
        """Generators per recipe at real fraction ``f``: the primary fraction has more (the power analysis)."""
        return self.g_primary if f == self.primary else self.g_secondary

    def gen_folder(self, f: float, recipe: str, g: int) -> Path:
        return self.work / f"fraction-{f:g}" / f"{recipe}-gen{g}"

    def control_folder(self, f: float, arm: str, ratio: float) -> Path:
        return self.work / f"fraction-{f:g}" / f"ratio-{ratio:g}" / arm.replace(" + ", "+")

    def synthetic_folders(self, f: float, recipe: str, mode: str, ratio: float) -> list[Path]:
        return [self.work / f"fraction-{f:g}" / f"ratio-{ratio:g}" / f"{mode}-{recipe}-gen{g}"
                for g in range(self.g(f))]

    def cells(self):
        """(fraction, ratio): the primary ratio 1 at every fraction, the other ratios at 25% real only."""
        return [(f, 1.0) for f in self.fractions] + [(self.primary, r) for r in self.ratios if r != 1 and
                                                     self.primary in self.fractions]


def generator_jobs(d: Design, data: Path, chunk: int) -> list[dict]:
    return [{"folder": str(d.gen_folder(f, r, g)), "recipe": r, "seed": g, "fraction": f, "data": str(data),
             "minutes": d.minutes, "n": d.n, "chunk": chunk} for f in d.fractions for r in d.recipes
            for g in range(d.g(f))]


def classifier_jobs(d: Design, data: Path, extra: Path) -> list[dict]:
    base = {"data": str(data), "test_extra": f"{extra}:test", **CLASSIFIER, **d.options}
    jobs = []
    for f, ratio in d.cells():
        common = {**base, "real_fraction": f, "synthetic_ratio": ratio}
        for arm, opts in CONTROLS.items():
            if arm == "real" and ratio != 1:
                continue  # real alone adds nothing: one run per fraction
            folder = d.control_folder(f, arm, 1.0 if arm == "real" else ratio)
            cfg = {**common, **opts, "seeds": d.g(f) * d.c, "out": str(folder)}
            if arm == "real":
                cfg.pop("synthetic_ratio")
            jobs.append({"out": str(folder), "config": cfg})
        for recipe in d.recipes:
            for mode in d.modes if ratio == 1 else ["mix"]:
                for g, folder in enumerate(d.synthetic_folders(f, recipe, mode, ratio)):
                    cfg = {**common, "seeds": d.c, "out": str(folder), "synthetic_mode": mode,
                           "synthetic": str(d.gen_folder(f, recipe, g) / "samples.h5")}
                    if mode == "pretrain":  # pretraining uses every sampled image, not a count-matched share
                        cfg.pop("synthetic_ratio")
                        cfg["synthetic_per_class"] = d.n
                    jobs.append({"out": str(folder), "config": cfg})
    return jobs


def train(stage: str = "all", fractions: str = "0.25,0.1,0.5,1", recipes: str = "limited,diffusion",
          generators: int = 6, secondary_generators: int = 2, seeds: int = 3, ratios: str = "1,0.5,2,4",
          modes: str = "mix,pretrain", primary: float = 0.25,
          minutes: float = 35, n: int = 500, workers: int = 2, options: dict = None, chunk: int = 20,
          workdir: str = None):
    """Run the stages (``stage``: generators, classifiers or all); ``options``: train_resnet options fixed by the
    protocol (e.g. '{"select": "last", "ema": 0.99}'); ``chunk``: generator epochs between budget checks."""
    work = work_dir(workdir, "study")
    data, extra = nih_mini_and_external(work)
    d = Design(work, fractions, recipes, generators, seeds, ratios, modes, minutes, n, options, primary,
               secondary_generators)
    if stage in ("generators", "all"):
        _pool(generator_job, generator_jobs(d, data, chunk), workers, "generator")
    if stage in ("classifiers", "all"):
        missing = [j["config"]["synthetic"] for j in classifier_jobs(d, data, extra) if "synthetic" in j["config"]
                   and not Path(j["config"]["synthetic"]).is_file()]
        if missing:
            raise SystemExit(f"{len(missing)} synthetic arm(s) lack their samples (e.g. {missing[0]}); run "
                             "--stage generators first")
        _pool(classifier_job, classifier_jobs(d, data, extra), workers, "classifier")


def finished(folders: list[Path]) -> bool:
    return all((Path(p) / "metrics.json").is_file() for p in folders)


def report(fractions: str = "0.25,0.1,0.5,1", recipes: str = "limited,diffusion", generators: int = 6,
           secondary_generators: int = 2, seeds: int = 3, ratios: str = "1,0.5,2,4", modes: str = "mix,pretrain",
           level: float = 0.9875, primary: float = 0.25, workdir: str = None, out: str = None):
    """The study's tables, verdict and figure from the finished runs (``level``: the per-arm interval of the
    decision, Bonferroni over the synthetic arms)."""
    from cxrgan.classify import verdict

    record_start()
    work = work_dir(workdir, "study")
    d = Design(work, fractions, recipes, generators, seeds, ratios, modes, 0, 0, None, primary,
               secondary_generators)
    rows, lines = [], []
    for f, ratio in d.cells():
        controls = {arm: d.control_folder(f, arm, 1.0 if arm == "real" else ratio) for arm in CONTROLS}
        controls = {k: v for k, v in controls.items() if finished([v])}
        for recipe in d.recipes:
            for mode in d.modes if ratio == 1 else ["mix"]:
                folders = d.synthetic_folders(f, recipe, mode, ratio)
                if not controls or not finished(folders):
                    continue
                res = verdict.primary(folders, controls, seed=0, level=level)
                arm = f"{MODES[mode]} ({recipe})"
                for name, c in res["comparisons"].items():
                    rows.append([f"{f:g}", f"{ratio:g}", arm, name, str(c["n_test"]), f"{c['auroc_control']:.3f}",
                                 f"{c['auroc_synthetic']:.3f}", f"{c['delta_auroc']:+.3f}",
                                 f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]", f"{c['p_value']:.3g}",
                                 f"{(c['ci95'][1] - c['ci95'][0]) / 2:.3f}"])
                if f == primary and ratio == 1:
                    lines.append(f"- {arm}: **{res['decision']}** (against the best control, {res['best_control']}: "
                                 f"half-width {res['half_width']:.3f})")
    table = show_table("study", ["real fraction", "ratio", "synthetic arm", "control", "test images",
                                 "control AUROC", "synthetic AUROC", "ΔAUROC", f"{100 * level:g}% CI", "p",
                                 "half-width"], rows)
    body = (f"The pre-registered study of docs/study-protocol.md, from the runs finished in `{work}`: "
            f"{d.g_primary} generator(s) per recipe at real fraction {primary:g} and {d.g_secondary} at the others, "
            f"{d.c} classifier seed(s) per generator, control arms with as many runs as a synthetic arm; pooled "
            f"internal + external test images; {100 * level:g}% seed-aware intervals, each synthetic arm's runs "
            f"grouped by generator.") + f"""

{table}

Decisions at real fraction {primary:g} (ratio 1), by the protocol's rule:

{chr(10).join(lines) or "- not finished yet"}
"""
    write_section("study", "The usefulness study (pre-registered)", body, out)


if __name__ == "__main__":
    fire.Fire({"train": train, "report": report})
