"""Which parts of the limited-data recipe help: each variant trained for the same wall-clock on NIH 64x64, several
GAN seeds, then scored as fid_is scores any samples file (domain features, per class) against the real test split.

Variants are rows of the recipe table plus option overrides; the ones that change a table field (the networks)
are registered here as extra rows, exactly as a new recipe would be. Each run trains in chunks of epochs until
its training time reaches the budget, with metric snapshots against the validation split and --select-snapshot,
so the scored generator is the best.pt chosen on validation KID (never test).

Needs bench/gan_diagnosis.py's work folder for the dataset and the real-data classifier (run it first, or this
script builds both the same way).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fire
import numpy as np
import torch

from _common import console, record_start, show_table, write_section
from cxrgan.classify.train import ClassifierConfig, run
from cxrgan.generative.recipes import RECIPES
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.generative.train import GanConfig, train
from cxrgan.metrics.evaluate import QualityConfig, evaluate
from gan_quality import NIH64, nih64_splits

EXTRA_RECIPES = {"limited-dcgan-nets": dataclasses.replace(RECIPES["limited"], networks="cgan", base=64)}
VARIANTS = {  # name -> (recipe, option overrides)
    "improved (today's default)": ("improved", {}),
    "limited": ("limited", {}),
    "limited without ADA": ("limited", {"ada_target": 0}),
    "limited without LeCam": ("limited", {"lecam": 0}),
    "limited with R1 (gamma 0.1)": ("limited", {"r1_gamma": 0.1}),
    "limited without EMA": ("limited", {"ema_kimg": 0}),
    "limited with the improved recipe's networks": ("limited-dcgan-nets", {}),
}
METRICS = ("kid_mean", "precision", "recall", "pixel_diversity")


def _log(msg: str) -> None:
    console.print(f"[{time.strftime('%H:%M:%S')}] {msg}")


def train_for(cfg: dict, minutes: float, chunk: int = 5) -> dict:
    """Train (resuming) for ``minutes`` more of training time. The first ``chunk`` epochs measure the time per
    epoch; every later call is sized to end at the budget, so the run stops within about half an epoch of it."""
    budget, seconds, epochs, result = minutes * 60, 0.0, 0, {}
    while seconds < budget:
        result = train(GanConfig(epochs=epochs + chunk, **cfg))
        done = result.get("epochs", epochs + chunk)
        if done > epochs and result.get("seconds", 0.0) > 0:  # (a resumed run may already be past epochs + chunk)
            seconds += result["seconds"]
            per_epoch = result["seconds"] / (done - epochs)
            if budget - seconds < per_epoch / 2:  # one more epoch would overshoot more than stopping undershoots
                break
            chunk = max(1, round((budget - seconds) / per_epoch))
        epochs = done
    return {**result, "seconds": seconds}


def continue_run(source: Path, run_dir: Path) -> float:
    """Start ``run_dir`` as a copy of the finished run ``source`` (its checkpoints, losses and metric snapshots, not its
    samples or scores), so that training resumes where ``source`` stopped. Returns ``source``'s training seconds, which
    a longer budget's record adds to its own."""
    if not (source / "scores.json").is_file():
        raise SystemExit(f"error: {source} has no scores.json; finish that run first")
    if not run_dir.exists():
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("scores.json", "samples*.h5", "fid_is*"))
    return json.loads((source / "scores.json").read_text())["seconds"]


def real_reference(data: Path, features: str, workdir: Path) -> dict:
    """The same metrics for the real training images in place of generated ones: what a perfect generator of this
    training set would score against the test split."""
    return evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=f"{data}:train", features=features,
                                  out=str(workdir / "real-train-vs-test.json"), cache="", audit=False, seed=0,
                                  device="cpu"))


def main(minutes: float = 12, seeds: str = "0,1", n: int = 500, snapshot_kimg: float = 5, variants: str = None,
         workdir: str = "/tmp/scratch/diagnosis", reuse: bool = True, out: str = None, note: str = "",
         tag: str = "", section: str = "gan-ablation",
         title: str = "GAN ablation: the limited-data recipe's parts (NIH 64x64, equal wall-clock)",
         reference: bool = False, continue_tag: str = None):
    """Train and score every variant (or the comma-separated ``variants``); write the ablation section.

    ``tag`` is added to the run folders' names (a longer budget beside the ablation's runs), ``section``/``title``
    name the section written, ``reference`` adds the real-training-images-vs-test row per class. ``continue_tag``:
    each run starts from the finished run of that tag (e.g. ``-35min``) and trains ``minutes`` more; its record
    counts both runs' training time."""
    record_start()
    RECIPES.update(EXTRA_RECIPES)
    work = Path(workdir)
    data, real = nih64_splits(work, str(NIH64), 0)
    ckpt = work / "eval" / "real" / "model-seed0.pt"
    if not ckpt.is_file():
        run(ClassifierConfig(data=str(data), out=str(ckpt.parent), epochs=15, seeds=1, size=64, device="cpu",
                             overwrite=True))
    features = f"classifier:{ckpt}"
    names = [v.strip() for v in variants.split(",")] if variants else list(VARIANTS)
    seed_list = [int(s) for s in (seeds if isinstance(seeds, (tuple, list)) else str(seeds).split(","))]
    seeds = ",".join(map(str, seed_list))
    results = {}
    for name in names:
        recipe, overrides = VARIANTS[name]
        for seed in seed_list:
            run_dir = work / "ablation" / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}{tag}-s{seed}"
            scores = run_dir / "scores.json"
            if reuse and scores.is_file():
                results.setdefault(name, []).append(json.loads(scores.read_text()))
                continue
            source = work / "ablation" / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}{continue_tag}-s{seed}"
            before = 0.0 if continue_tag is None else continue_run(source, run_dir)
            _log(f"{name}, seed {seed}: {minutes} min of training")
            trained = train_for(dict(data=str(data), out=str(run_dir), recipe=recipe, seed=seed, device="cpu",
                                     snapshot_kimg=snapshot_kimg, snapshot_features=features, select_snapshot=True,
                                     **overrides), minutes)
            gens = resolve_generators(str(run_dir), run_dir, [0, 1], torch.device("cpu"))
            sample_to_file(run_dir / "samples.h5", gens, n, seed, torch.device("cpu"))
            m = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=str(run_dir / "samples.h5"),
                                       features=features,
                                       out=str(run_dir / "fid_is.json"), cache="", seed=seed, device="cpu"))
            seconds = before + trained["seconds"]
            record = {"seed": seed, "kimg": trained.get("kimg"), "seconds": seconds,
                      "img_per_s": 1000 * trained.get("kimg", 0) / seconds if seconds else None,
                      "checkpoint": gens[0].path.name, "per_class": m["per_class"], "near_copies": m["near_copies"],
                      "near_copies_features": m["near_copies_features"], "n_fake": m["n_fake"]}
            scores.write_text(json.dumps(record, indent=2))
            results.setdefault(name, []).append(record)
    classes = real["train"].classes
    rows = []
    for name, runs in results.items():
        for c in classes:
            cells = []
            for key in METRICS:
                v = np.array([r["per_class"][c][key] for r in runs if r["per_class"][c][key] is not None], float)
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else
                             f"{v.mean():.3f}" if len(v) else "–")
            kimg = np.mean([r["kimg"] or 0 for r in runs])
            speed = np.mean([r["img_per_s"] or 0 for r in runs])
            rows.append([name, c, str(len(runs)), f"{kimg:.1f}", f"{speed:.1f}", *cells,
                         f"{np.mean([r['near_copies'] for r in runs]):.1f}"])
    if reference:
        ref = real_reference(data, features, work)
        for c in classes:
            m = ref["per_class"][c]
            rows.append([f"real training images ({m['n_fake']}), the reference", c, "–", "–", "–",
                         *(f"{m[k]:.3f}" if m[k] is not None else "–" for k in METRICS), "–"])
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
