#!/usr/bin/env python3
"""The laptop run's GAN (`make all`'s `laptop` recipe on nih-mini) by training length and variant: quality per kimg
in float32, in bf16 autocast on the CPU (`train_dcgan --precision bf16`) and with class-balanced epochs
(`--balance`), and the training speed of each.

bf16 autocast runs 1.4-1.5x faster on CPUs with AMX or AVX512-BF16 (docs/benchmarks.md, "Generator training throughput
on the CPU"); it is only worth offering if the images are as good per kimg. Balanced epochs show the 80 Infiltration
images as often as the 251 No Finding ones. Each variant (VARIANTS) and seed trains one run,
continued from one length in --kimg to the next; at each it samples 500 images per class and scores them against
nih-mini's real test images in both feature spaces of the study and cpu_budget (common.SPACES), beside the real
training images' own scores (the reference).

    python bench/experiments/laptop_gan.py [--kimg 30,50] [--variants fp32,bf16,balanced] [--seeds 0,1]

The timing is train_dcgan's img/s over the run, so run it on a quiet machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (SPACES, as_list, build_feature_network, log, nih_mini_and_external,  # noqa: E402
                    real_reference, record_start, show_table, work_dir, write_section)

RECIPE = "laptop"
KEYS = ("precision", "recall", "pixel_diversity")
# name -> train_dcgan options on top of the recipe (the names of the first two are their --precision)
VARIANTS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "balanced": {"precision": "fp32", "balance": True}}


def point(work: Path, data: Path, variant: str, seed: int, kimg: float, n: int) -> dict:
    """Train (continuing) to ``kimg``, sample, score; kept as points/PRECISION-seedS-Kkimg.json in the work folder."""
    from cxrgan.fileio import write_json_atomic
    from cxrgan.generative.sample import resolve_generators, sample_to_file
    from cxrgan.generative.train import GanConfig, train
    from cxrgan.metrics.evaluate import QualityConfig, evaluate

    out = work / "points" / f"{variant}-seed{seed}-{kimg:g}kimg.json"
    if out.is_file():
        return json.loads(out.read_text())
    run = work / "runs" / f"{variant}-seed{seed}"
    trained = train(GanConfig(data=str(data), out=str(run), recipe=RECIPE, kimg=kimg, seed=seed, device="cpu",
                              ckpt_every=1000, grid=4, **VARIANTS[variant]))
    samples = run / f"samples-{kimg:g}.h5"
    sample_to_file(samples, resolve_generators(str(run), run, [0, 1], torch.device("cpu")), n, seed,
                   torch.device("cpu"))
    record = {"variant": variant, "seed": seed, "kimg": trained["kimg"], "img_per_s": trained["img_per_s"],
              "quality": {}}
    shared = work_dir(None, "study")
    for space in SPACES:
        m = evaluate(QualityConfig(real=f"{data}:test", fake=str(samples), audit=False, cache="", device="cpu",
                                   out=str(run / f"quality-{space}.json"), seed=0, overwrite=True,
                                   features=f"{space}:{build_feature_network(shared, space)}"))
        record["quality"][space] = {c: {k: v[k] for k in KEYS} for c, v in m["per_class"].items()}
    samples.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, record)
    log(f"{variant} seed {seed} at {kimg:g} kimg ({trained['img_per_s']:.0f} img/s): " + "; ".join(
        f"{c} P/R {q['precision']:.2f}/{q['recall']:.2f}" for c, q in record["quality"]["classifier"].items()))
    return record


def _cell(values: list[float]) -> str:
    v = np.array(values, float)
    return f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def main(kimg: str = "30,50", variants: str = "fp32,bf16,balanced", seeds: str = "0,1", n: int = 500,
         out: str | None = None) -> None:
    """Every variant x seed x length (lengths nested per run); the section "The laptop GAN: length, precision and
    class balance" (out="": nothing written)."""
    unknown = [v for v in as_list(variants, str) if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    record_start()
    torch.set_num_threads(2)
    work = work_dir(None, "laptop-gan")
    data, _ = nih_mini_and_external(work_dir(None, "study"))
    for v in as_list(variants, str):
        for s in as_list(seeds, int):
            for k in sorted(as_list(kimg, float)):
                point(work, data, v, s, k, n)
    # the table: every kept point of these variants, also seeds run by an earlier call (e.g. more seeds of a few)
    points = [json.loads(p.read_text()) for p in sorted((work / "points").glob("*.json"))]
    sections = []
    for space in SPACES:
        rows = []
        for p in as_list(variants, str):
            for k in sorted(as_list(kimg, float)):  # points written before variants name theirs "precision"
                runs = [r for r in points if r.get("variant", r.get("precision")) == p and abs(r["kimg"] - k) < 1]
                for cls in runs[0]["quality"][space]:
                    rows.append([p, f"{k:g}", len(runs), _cell([r["img_per_s"] for r in runs]), cls,
                                 *(_cell([r["quality"][space][cls][key] for r in runs]) for key in KEYS)])
        ref = real_reference(data, f"{space}:{build_feature_network(work_dir(None, 'study'), space)}", work)
        for cls, q in ref["per_class"].items():
            rows.append(["*real training images (reference)*", "–", "–", "–", cls,
                         *(f"{q[k]:.2f}" for k in KEYS)])
        sections.append(f"Feature space: {space}.\n\n" + show_table(
            f"laptop GAN ({space} space)", ["variant", "kimg", "seeds", "img/s", "class", *KEYS], rows))
    write_section("laptop-gan", "The laptop GAN: length, precision and class balance",
                  f"The `{RECIPE}` recipe on nih-mini (64x64, 331 training images, 2 threads), one run per variant "
                  "(fp32: as the recipe; bf16: `--precision bf16`; balanced: `--balance`, each class drawn equally "
                  "often) and seed continued from one length to the next; 500 images per class scored against the 90 real "
                  "test images (mean ± sd over seeds: every point kept in the work folder, also seeds that an earlier "
                  "call ran). img/s: train_dcgan's, over the training since the previous "
                  "length.\n\n"
                  + "\n\n".join(sections), out)


if __name__ == "__main__":
    fire.Fire(main)
