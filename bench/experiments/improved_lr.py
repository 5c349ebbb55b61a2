"""Choosing the improved recipe's learning rates by measurement: a few (lr_G, lr_D) pairs, each trained for the
same wall-clock on real NIH 64x64 images and scored by SWD (lower is better) of 500 samples per class; the best
``confirm`` pairs are trained again with more seeds, since one GAN run is a noisy measurement."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import NIH64, nih64_splits, record_start, show_table, swd, work_dir, write_section  # noqa: E402
from cxrgan.data.reader import H5ImageDataset
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.generative.train import GanConfig, train

PAIRS = ((2e-4, 2e-4), (1e-4, 4e-4), (2e-4, 1e-4), (4e-4, 4e-4))


def run_one(data: Path, run: Path, lr_g: float, lr_d: float, seed: int, seconds: float, n: int, real) -> dict:
    """Train for ``seconds`` of training time, sample, score; cached in run/result.json."""
    cached = run / "result.json"
    if cached.exists():
        return json.loads(cached.read_text())
    spent, epochs = 0.0, 0
    while spent < seconds:
        epochs += 1
        spent += train(GanConfig(data=str(data), out=str(run), recipe="improved", lr_g=lr_g, lr_d=lr_d,
                                 epochs=epochs, seed=seed, device="cpu"))["seconds"]
    sample_to_file(run / "s.h5", resolve_generators(str(run / "last.pt"), run, [0, 1], torch.device("cpu")),
                   n, seed, torch.device("cpu"))
    fake = H5ImageDataset(run / "s.h5", "synthetic", in_memory=True)
    scores = [swd(np.concatenate([d.images[d.labels == c] for d in real]), fake.images[fake.labels == c],
                  seed=seed)["swd_mean"] for c in (0, 1)]
    result = {"epochs": epochs, "seconds": spent, "swd": scores}
    cached.write_text(json.dumps(result))
    return result


def main(src: str = str(NIH64), seconds: float = 150, n: int = 500, seeds: int = 2, confirm: int = 2,
         workdir: str = None, out: str = None):
    """Sweep the pairs with seed 0, re-run the best ``confirm`` pairs with seeds 1..seeds-1, write the table.
    ``workdir`` (default: the benchmarks' work folder "lr", see common.work_dir) caches each run's result."""
    record_start()
    work = work_dir(workdir, "lr")
    data, splits = nih64_splits(work, src)
    real = list(splits.values())
    runs = work / f"{seconds:g}s"  # cached results are per budget: another --seconds trains its own runs
    results = {}
    for lr_g, lr_d in PAIRS:
        results[(lr_g, lr_d)] = [run_one(data, runs / f"lr-{lr_g:g}-{lr_d:g}", lr_g, lr_d, 0, seconds, n, real)]
    best = sorted(results, key=lambda p: np.mean(results[p][0]["swd"]))[:confirm]
    for pair in best:
        for seed in range(1, seeds):
            results[pair].append(run_one(data, runs / f"lr-{pair[0]:g}-{pair[1]:g}-s{seed}", *pair, seed,
                                         seconds, n, real))
    rows = []
    for (lr_g, lr_d), runs in results.items():
        per_seed = [np.mean(r["swd"]) for r in runs]
        rows.append([f"{lr_g:g}", f"{lr_d:g}", f"{lr_g / lr_d:g}", len(runs),
                     f"{np.mean([r['epochs'] for r in runs]):.0f}",
                     " / ".join(f"{np.mean([r['swd'][c] for r in runs]):.0f}" for c in (0, 1)),
                     ", ".join(f"{v:.0f}" for v in per_seed), f"{np.mean(per_seed):.0f}"])
    table = show_table("improved recipe: learning rates",
                       ["lr_G", "lr_D", "G:D", "seeds", "epochs", "SWD NF / Inf", "SWD mean per seed", "SWD mean"],
                       rows)
    body = f"""The improved recipe (conditional DCGAN, projection D with spectral norm, hinge loss, DiffAugment, EMA;
Adam betas (0.0, 0.99), one G step per D step) trained for {seconds:.0f} s of training time per run on {src} at
64x64; SWD x1e3 (mean over pyramid levels, lower is better) of {n} samples per class against all real images of
the class. Every pair ran with seed 0; the best {confirm} were re-run with seeds 1..{seeds - 1}.

{table}
"""
    write_section("improved-lr", "Improved recipe: learning-rate choice", body, out)


if __name__ == "__main__":
    fire.Fire(main)
