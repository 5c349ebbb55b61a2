"""Which parts of the limited-data recipe help: each variant trained for the same wall-clock on NIH 64x64, several
GAN seeds, then scored as fid_is scores any samples file (domain features, per class) against the real test split.

Variants are rows of the recipe table plus option overrides. Each run trains in chunks of epochs until its training
time reaches the budget, with metric snapshots against the validation split and --select-snapshot, so the scored
generator is the best.pt chosen on validation KID (never test).

Uses bench/experiments/gan_diagnosis.py's work folder ("diagnosis") for the dataset and the real-data classifier
(run it first, or this script builds both the same way).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (NIH64, as_list, continue_run, log, metric_cells, nih64_splits, real_classifier,  # noqa: E402
                    record_start, reference_rows, show_table, train_for, work_dir, write_section)
from cxrgan.classify.train import ClassifierConfig, run
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.metrics.evaluate import QualityConfig, evaluate

VARIANTS = {  # name -> (recipe, option overrides)
    "improved": ("improved", {}),
    "limited": ("limited", {}),
    "limited without ADA": ("limited", {"ada_target": 0}),
    "limited without LeCam": ("limited", {"lecam": 0}),
    "limited with R1 (gamma 0.1)": ("limited", {"r1_gamma": 0.1}),
    "limited without EMA": ("limited", {"ema_kimg": 0}),
}


def run_folder(work: Path, name: str, tag: str, seed: int) -> Path:
    """A variant's run folder: its name in lower case with dashes, the tag, the GAN seed."""
    return work / "ablation" / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}{tag}-s{seed}"


def train_and_score(name: str, seed: int, work: Path, data: Path, features: str, minutes: float, n: int,
                    snapshot_kimg: float, tag: str, continue_tag: str | None) -> dict:
    """Train one variant for ``minutes`` of training time (after the ``continue_tag`` run, if given), sample and
    score its best snapshot; the record goes to the run's scores.json."""
    recipe, overrides = VARIANTS[name]
    run_dir = run_folder(work, name, tag, seed)
    before = 0.0 if continue_tag is None else continue_run(run_folder(work, name, continue_tag, seed), run_dir)
    log(f"{name}, seed {seed}: {minutes} min of training")
    trained = train_for(dict(data=str(data), out=str(run_dir), recipe=recipe, seed=seed, device="cpu",
                             snapshot_kimg=snapshot_kimg, snapshot_features=features, select_snapshot=True,
                             **overrides), minutes)
    gens = resolve_generators(str(run_dir), run_dir, [0, 1], torch.device("cpu"))
    sample_to_file(run_dir / "samples.h5", gens, n, seed, torch.device("cpu"))
    m = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=str(run_dir / "samples.h5"),
                               features=features, out=str(run_dir / "fid_is.json"), cache="", seed=seed, device="cpu"))
    seconds = before + trained["seconds"]
    record = {"seed": seed, "kimg": trained.get("kimg"), "seconds": seconds,
              "img_per_s": 1000 * trained.get("kimg", 0) / seconds if seconds else None,
              "checkpoint": gens[0].path.name, "per_class": m["per_class"], "near_copies": m["near_copies"],
              "near_copies_features": m["near_copies_features"], "n_fake": m["n_fake"]}
    (run_dir / "scores.json").write_text(json.dumps(record, indent=2))
    return record


def variant_rows(results: dict, classes) -> list[list[str]]:
    rows = []
    for name, runs in results.items():
        for c in classes:
            kimg = np.mean([r["kimg"] or 0 for r in runs])
            speed = np.mean([r["img_per_s"] or 0 for r in runs])
            rows.append([name, c, str(len(runs)), f"{kimg:.1f}", f"{speed:.1f}", *metric_cells(runs, c),
                         f"{np.mean([r['near_copies'] for r in runs]):.1f}"])
    return rows


def main(minutes: float = 12, seeds: str = "0,1", n: int = 500, snapshot_kimg: float = 5, variants: str = None,
         workdir: str = None, reuse: bool = True, out: str = None, note: str = "",
         tag: str = "", section: str = "gan-ablation",
         title: str = "GAN ablation: the limited-data recipe's parts (NIH 64x64, equal wall-clock)",
         reference: bool = False, continue_tag: str = None):
    """Train and score every variant (or the comma-separated ``variants``); write the ablation section.

    ``tag`` is added to the run folders' names (a longer budget beside the ablation's runs), ``section``/``title``
    name the section written, ``reference`` adds the real-training-images-vs-test row per class. ``continue_tag``:
    each run starts from the finished run of that tag (e.g. ``-35min``) and trains ``minutes`` more; its record
    counts both runs' training time. ``workdir``: the benchmarks' work folder "diagnosis" unless given (see
    common.work_dir)."""
    record_start()
    names = as_list(variants, str.strip) if variants else list(VARIANTS)
    if unknown := [v for v in names if v not in VARIANTS]:
        raise SystemExit(f"unknown variant(s) {unknown}; the variants are {list(VARIANTS)}")
    work = work_dir(workdir, "diagnosis")
    data, real = nih64_splits(work, NIH64, 0)
    ckpt = real_classifier(work)
    if not ckpt.is_file():
        run(ClassifierConfig(data=str(data), out=str(ckpt.parent), epochs=15, seeds=1, size=64, device="cpu",
                             overwrite=True))
    features = f"classifier:{ckpt}"
    seed_ints = as_list(seeds)
    seeds = ",".join(map(str, seed_ints))
    results = {}
    for name in names:
        for seed in seed_ints:
            scores = run_folder(work, name, tag, seed) / "scores.json"
            results.setdefault(name, []).append(
                json.loads(scores.read_text()) if reuse and scores.is_file() else
                train_and_score(name, seed, work, data, features, minutes, n, snapshot_kimg, tag, continue_tag))
    classes = real["train"].classes
    rows = variant_rows(results, classes)
    if reference:
        rows += reference_rows(data, features, work, classes, before=3, after=1)
    table = show_table("ablation", ["variant", "class", "GAN seeds", "kimg in budget", "img/s", "KID", "precision",
                                    "recall", "pixel diversity", "near copies (pixels)"], rows)
    body = f"""Each variant trained for {minutes:g} min of training time on the CPU (equal wall-clock, other jobs may
share the machine), GAN seeds {seeds}; metric snapshots every {snapshot_kimg:g} kimg against the validation split,
the best by validation KID kept (best.pt) and scored: {n} images per class against the {len(real['test'])} real test
images in the real-data ResNet-18's feature space (`{ckpt}`), as fid_is computes KID, precision/recall (k = 3),
pixel diversity, and near copies (of {n * 2} images; about 1% expected by chance). Mean ± sd over GAN seeds;
img/s: training throughput including the snapshots, {torch.get_num_threads()} CPU thread(s) per run. {note}

{table}
"""
    write_section(section, title, body, out)


if __name__ == "__main__":
    fire.Fire(main)
