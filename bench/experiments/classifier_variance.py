"""Where does the spread between classifier seeds come from, and which training options cut it?

On the shipped real subset (data/nih-mini at 64x64, split by patient) every run is one ResNet-18 trained from
scratch with train_resnet's protocol (``cxrgan.classify.train.train_one``), tested on the internal test split (90
images, 27 Infiltration) and on an external test set: nih64-extra's "No Finding" and "Infiltration" radiographs
(330 images of other patients, every one in the test split).

1. Sources (baseline options): every seed varies both the initial weights and the order of batches and
   augmentation; holding the initial weights fixed (``init_seed``) leaves the order's share, holding the order
   fixed (one seed, the initial weights varied) the initialisation's.
2. Variants: epoch selection (val AUROC on 31 images, val loss, or the last epoch), a cosine learning-rate
   schedule, an exponential moving average of the weights (EMA), on the real arm.
3. Arms: the baseline and the chosen variants on the two control arms (oversampling, augmentation).

Each run's result is kept in the work folder as it finishes (an interrupted study resumes); ``--workers`` runs
that many at once, one CPU thread each. Writes the "classifier-variance" section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the machine is shared

import fire
import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import log, nih_mini_and_external, record_start, show_table, work_dir, write_section  # noqa: E402

BASE = {"epochs": 15, "patience": 5, "size": 64, "lr": 3e-4, "batch": 32}  # the usefulness sections' protocol
VARIANTS = {  # name -> train_resnet options on top of BASE
    "baseline (val AUROC, constant lr)": {},
    "val loss selection": {"select": "loss"},
    "last epoch": {"select": "last"},
    "cosine lr, last epoch": {"select": "last", "schedule": "cosine"},
    "EMA 0.99, last epoch": {"select": "last", "ema": 0.99},
    "EMA 0.99 + cosine, last epoch": {"select": "last", "ema": 0.99, "schedule": "cosine"},
}
ARM_OPTIONS = {"real": {}, "real + oversampling": {"control": "oversample"},
               "real + augmentation": {"control": "augment"}}
SOURCES = {"init and order vary (the baseline)": "both", "order only (initial weights fixed)": "order",
           "initial weights only (order fixed)": "init"}


def one_run(job: dict) -> dict:
    """Train one classifier (in a worker process, one thread) and return its test AUROCs."""
    import torch

    from cxrgan.classify.train import ClassifierConfig, _load, train_one

    torch.set_num_threads(1)
    cfg = ClassifierConfig(data=job["data"], out=job["out"], test_extra=job["extra"], device="cpu", n_boot=10,
                           **BASE, **job["options"])
    data = _load(cfg)
    k, init = {"both": (job["k"], None), "order": (job["k"], 10_000),
               "init": (0, 10_000 + job["k"])}[job["source"]]
    start = time.monotonic()
    r = train_one(cfg, k, data, torch.device("cpu"), init_seed=init)
    return {"auroc": r["auroc"], "external_auroc": r["extra_tests"][0]["auroc"], "best_epoch": r["best_epoch"],
            "epochs_run": len(r["history"]), "seconds": time.monotonic() - start}


def run_all(jobs: list[dict], workers: int) -> list[dict]:
    """Every job's result, from its file when a finished earlier run left one."""
    todo = [j for j in jobs if not Path(j["file"]).is_file()]
    log(f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; {len(todo)} to go")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for i, (job, result) in enumerate(zip(todo, pool.map(one_run, todo))):
            Path(job["file"]).write_text(json.dumps(result))
            log(f"{i + 1}/{len(todo)} {Path(job['file']).stem}: AUROC {result['auroc']:.3f} internal, "
                f"{result['external_auroc']:.3f} external, {result['seconds']:.0f} s")
    return [json.loads(Path(j["file"]).read_text()) for j in jobs]


def sd_cell(values: list[float]) -> str:
    """The sd over runs with its 95% interval (chi-square, normal runs assumed)."""
    v = np.asarray(values)
    n, sd = len(v), float(v.std(ddof=1))
    lo, hi = (sd * np.sqrt((n - 1) / st.chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return f"{sd:.3f} [{lo:.3f}, {hi:.3f}]"


def cells(results: list[dict]) -> list[str]:
    internal, external = [r["auroc"] for r in results], [r["external_auroc"] for r in results]
    return [str(len(results)), f"{np.mean(internal):.3f}", sd_cell(internal), f"{np.mean(external):.3f}",
            sd_cell(external), f"{np.mean([r['best_epoch'] for r in results]):.1f}",
            f"{np.mean([r['seconds'] for r in results]):.0f}"]


def main(seeds: int = 8, workers: int = 2, variants: str = "", arm_variants: str = "baseline (val AUROC, "
         "constant lr)|EMA 0.99 + cosine, last epoch", arms: str = "real + oversampling|real + augmentation",
         sources: bool = True, report_only: bool = False, section: str = "", workdir: str = None, out: str = None):
    """Run the study (``variants``: '|'-separated names of VARIANTS run on the real arm, default all, "none" none;
    ``arm_variants``: those also run on the control ``arms``, "" none) and write its section (``out`` another file;
    "" none; ``section``: a part run on its own, written as its own section with this name); ``report_only``: train
    nothing, and show the rows whose runs have all finished."""
    record_start()
    work = work_dir(workdir, "classifier-variance")
    data, extra = nih_mini_and_external(work)
    (work / "runs").mkdir(exist_ok=True)
    chosen = [] if variants == "none" else [v for v in (variants.split("|") if variants else VARIANTS)]
    on_arms = [v for v in arm_variants.split("|") if v]

    def jobs(variant: str, arm: str, source: str = "both") -> list[dict]:
        slug = f"{list(VARIANTS).index(variant)}-{arm.replace(' + ', '+')}-{source}"
        return [{"data": str(data), "extra": f"{extra}:test", "out": str(work / "unused"), "k": k, "source": source,
                 "options": {**VARIANTS[variant], **ARM_OPTIONS[arm]}, "file": str(work / "runs" / f"{slug}-{k}.json")}
                for k in range(seeds)]

    plan = [(v, "real", "both") for v in chosen]
    if sources:
        plan += [(list(VARIANTS)[0], "real", s) for s in ("order", "init")]
    plan += [(v, a, "both") for a in arms.split("|") if a for v in on_arms]  # one arm's before/after first
    all_jobs = [jobs(*p) for p in plan]
    if report_only:
        plan, all_jobs = zip(*[(p, js) for p, js in zip(plan, all_jobs) if all(Path(j["file"]).is_file() for j in js)])
    results = run_all([j for js in all_jobs for j in js], workers)
    by_plan, i = {}, 0
    for p, js in zip(plan, all_jobs):
        by_plan[p], i = results[i:i + len(js)], i + len(js)
    write(by_plan, seeds, section, out)


def write(by_plan: dict, seeds: int, section: str, out: str | None) -> None:
    headers = ["arm", "variant", "runs", "internal AUROC", "sd [95% CI]", "external AUROC", "sd [95% CI]",
               "mean kept epoch", "s/run"]
    source_rows = [[s, *cells(by_plan[(list(VARIANTS)[0], "real", key)])] for s, key in SOURCES.items()
                   if (list(VARIANTS)[0], "real", key) in by_plan]
    rows = [[arm, variant, *cells(r)] for (variant, arm, source), r in by_plan.items() if source == "both"]
    sources_table = show_table("sources of the spread", ["what varies", *headers[2:]], source_rows)
    table = show_table("variants", headers, rows)
    body = f"""Where the spread between classifier seeds comes from, and which training options cut it
(`bench/experiments/classifier_variance.py`). Data: `data/nih-mini` at 64x64 (train [251, 80], val [25, 6],
test [63, 27] No Finding / Infiltration, split by patient). Every run: one ResNet-18 from scratch at 64x64,
batch 32, AdamW lr 3e-4, at most 15 epochs (patience 5 where an epoch is selected), classical augmentation
without flips; tested on the internal test split (90 images) and on the external test set (nih64-extra's 62 No
Finding + 268 Infiltration radiographs, 330 images of other patients). {seeds} runs per row; sd: the sample sd
of the runs' test AUROC, with a 95% chi-square interval (normal runs assumed). Part of each sd is the runs'
own luck with the particular test images (model x image noise), so the sd on 330 images is the better measure
of the training runs' spread.

""" + (f"""
Sources of the spread (baseline options, real arm):

{sources_table}
""" if source_rows else "") + f"""
Training options, per arm:

{table}
"""
    key, title = "classifier-variance", "Spread between classifier seeds: sources and cures (nih-mini)"
    if section:
        key, title = f"{key}-{section.replace(' ', '-')}", f"{title}: {section}"
    write_section(key, title, body, out)


if __name__ == "__main__":
    fire.Fire(main)
