"""Synthetic chest X-rays of the seed and improved GAN recipes (NIH 64x64): how close they are to real images in a
chest-X-ray feature space, whether any is a near copy of a training image, and whether they help a classifier.

Uses bench/experiments/gan_quality.py's work folder ("quality": the real dataset nih64.h5 split by patient, and 500
generated images per class from each recipe in seed.h5 and improved.h5). Steps, all with the project's own protocols:
1. real baseline: train_resnet's protocol (cxrgan.classify.train.run) on the real training split, ``seeds`` seeds;
2. domain quality: fid_is's protocol (quality.evaluate) with the baseline's seed-0 ResNet-18 as the feature network
   (penultimate layer, 512-d), generated images against the real test split, memorisation audit against the real
   training split; a real-vs-real reference (real val against real test) and an equal-N comparison;
3. usefulness: real + synthetic (paired against the real baseline: ΔAUROC bootstrap CI, McNemar) and
   train-on-synthetic-test-on-real (TSTR), same seeds and epochs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: idle threads sleep instead of spinning. On this small shared machine, spinning threads
# made training 3-15x slower whenever another process took a core; sleeping ones cost ~10% on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import cpu_seconds, log, record_start, show_table, work_dir, write_section  # noqa: E402
from cxrgan.classify.train import ClassifierConfig, run
from cxrgan.data.reader import H5ImageDataset
from cxrgan.metrics import scores
from cxrgan.metrics.evaluate import QualityConfig, evaluate
from cxrgan.metrics.features import cached_features, feature_net

COMPARED = ("seed", "improved")  # the recipes whose samples gan_quality.py made


def _held_out_median(a: dict) -> float:
    return a.get("held_out_to_train_median", a.get("test_to_train_median", float("nan")))


def _classify(work: Path, name: str, data: Path, seeds: int, epochs: int, size: int, patience: int, reuse: bool,
              **extra) -> tuple[dict, float]:
    """cxrgan.classify.train.run into WORK/eval/NAME (or its earlier metrics.json with the same settings when
    ``reuse``)."""
    out = work / "eval" / name
    cfg = ClassifierConfig(overwrite=True, data=str(data), out=str(out), epochs=epochs, seeds=seeds, size=size,
                           patience=patience, device="cpu", **extra)
    if reuse and (out / "metrics.json").is_file():
        old = json.loads((out / "metrics.json").read_text())
        same = all(old["config"].get(k) == v for k, v in cfg.__dict__.items() if k != "out")
        if same and "seconds" in old.get("args", {}):
            log(f"{name}: reusing {out}/metrics.json")
            old["reused"] = True
            return old, old["args"]["seconds"]
    log(f"{name}: training {seeds} seed(s), at most {epochs} epochs each")
    busy0, own0 = cpu_seconds()
    t0 = time.perf_counter()

    def progress(description, total=None, completed=0):  # cli.ProgressFn: a log line per seed
        def task(advance=1, *, completed=None, total=None, info=None):
            log(f"  {name}: {info}, {time.perf_counter() - t0:.0f} s so far")
        return task

    s = run(cfg, call_args={"bench": "gan_eval", "seconds": None}, progress=progress)
    seconds = time.perf_counter() - t0
    busy1, own1 = cpu_seconds()
    s["args"]["seconds"] = seconds  # recorded so --reuse can report them
    s["args"]["other_load"] = max(0.0, ((busy1 - busy0) - (own1 - own0)) / (seconds * os.cpu_count()))
    (out / "metrics.json").write_text(json.dumps(s, indent=2))
    log(f"{name}: AUROC {s['auroc']:.3f} ({s['auroc_ci95'][0]:.3f}-{s['auroc_ci95'][1]:.3f}) in {seconds:.0f} s")
    return s, seconds


def _f(v, fmt=".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _p(p: float, n_boot: int = 1000) -> str:
    return f"< {1 / n_boot:g}" if p == 0 else f"= {p:.2g}"


def _kid(m: dict) -> str:
    return "–" if m.get("kid_mean") is None else f"{1e3 * m['kid_mean']:.1f} ± {1e3 * m['kid_std']:.1f}"


def domain_quality(data: Path, samples: dict, ev: Path, features: str, draws: int, n_val: np.ndarray) -> tuple:
    """fid_is's protocol on each recipe's samples and on real val images (the reference), and the equal-N
    comparison: ``draws`` generated subsets with the val split's size and class mix, against the same test images."""
    cache, quality = ev / "cache", {}
    for r in COMPARED:
        log(f"{r}: domain FID/KID/precision/recall and memorisation audit")
        quality[r] = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=str(samples[r]),
                                            out=str(ev / f"quality-{r}.json"), features=features,
                                            train=f"{data}:train", audit=True, cache=str(cache), device="cpu"))
    log("real val vs real test (reference)")
    quality["real val"] = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=f"{data}:val",
                                                 out=str(ev / "quality-real-val.json"), features=features,
                                                 audit=False, cache=str(cache), device="cpu"))
    net = feature_net(features, device="cpu")
    test_f = cached_features(net, H5ImageDataset(data, "test"), cache)[0]
    equal_n = {}
    for r in COMPARED:
        ds = H5ImageDataset(samples[r], "synthetic")
        f = cached_features(net, ds, cache)[0]
        rng = np.random.default_rng(0)
        fids, kids, precs, recs = [], [], [], []
        for _ in range(draws):
            idx = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), n_val[c], replace=False)
                                  for c in range(len(n_val))])
            fids.append(scores.fid(test_f, f[idx]))
            kids.append(scores.kid(test_f, f[idx], 100, 1000, seed=0)[0])
            p, rc = scores.precision_recall(test_f, f[idx], 3)
            precs.append(p), recs.append(rc)
        equal_n[r] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in
                      (("fid", fids), ("kid", kids), ("precision", precs), ("recall", recs))}
    return quality, equal_n


def quality_tables(quality: dict, equal_n: dict, draws: int, n_val: np.ndarray, n_test: int) -> tuple[str, str, str]:
    """The domain-quality, equal-N and memorisation-audit tables."""
    q_rows = []
    for name in (*COMPARED, "real val"):
        q = quality[name]
        label = f"{name} generated" if name in COMPARED else "real val (reference)"
        for scope, m in [("all", q), *q["per_class"].items()]:
            q_rows.append([label, scope, m["n_real"], m["n_fake"], _f(m["fid"], ".1f"), _kid(m),
                           _f(m["precision"]), _f(m["recall"])])
    q_table = show_table("domain quality", ["images", "class", "n real (test)", "n compared", "FID",
                                            "KID ×1e3 (± sd)", "precision", "recall"], q_rows)
    e_rows = [[f"{r} generated ({draws} draws)", *(f"{equal_n[r][k][0]:{fmt}} ± {equal_n[r][k][1]:{fmt}}"
                                                     for k, fmt in (("fid", ".1f"), ("kid", ".4f"),
                                                                    ("precision", ".3f"), ("recall", ".3f")))]
              for r in COMPARED]
    rv = quality["real val"]
    e_rows.append(["real val (one set)", f"{rv['fid']:.1f}", f"{rv['kid_mean']:.4f}", f"{rv['precision']:.3f}",
                   f"{rv['recall']:.3f}"])
    e_table = show_table(f"equal N ({int(n_val.sum())} images vs the {n_test} real test images)",
                         ["images", "FID", "KID", "precision", "recall"], e_rows)
    a_rows = []
    for r in COMPARED:
        q = quality[r]
        a_rows.append([r, q["n_fake"], f"{q['near_copies']} ({100 * q['near_copies'] / q['n_fake']:.1f}%)",
                       f"{q['audit_pixels']['synthetic_to_train_median']:.3g}",
                       f"{_held_out_median(q['audit_pixels']):.3g}",
                       f"{q['near_copies_features']} ({100 * q['near_copies_features'] / q['n_fake']:.1f}%)"])
    a_table = show_table("memorisation audit", ["recipe", "generated", "near copies, pixels",
                                                "median NN dist gen→train (pixels)", "median test→train (pixels)",
                                                "near copies, features"], a_rows)
    return q_table, e_table, a_table


def classifier_table(clf: dict, wall: dict) -> str:
    c_rows = []
    for name, s in clf.items():
        ps = s["per_seed"]
        auc = f"{s['auroc']:.3f} ({s['auroc_ci95'][0]:.3f}–{s['auroc_ci95'][1]:.3f})"
        sd = "–" if s["auroc_sd"] is None else f"{s['auroc_sd']:.3f}"
        if "paired" in s:
            p = s["paired"]
            delta = f"{p['delta_auroc']:+.3f} ({p['ci95'][0]:+.3f} to {p['ci95'][1]:+.3f}), p {_p(p['p_value'])}"
            mc = p["mcnemar"]
            mcn = f"{mc['only_a_correct']} vs {mc['only_b_correct']}, p = {mc['p_value']:.2g}"
        else:
            delta = mcn = "(baseline)"
        c_rows.append([name, f"{ps[0]['n_train_real']} + {ps[0]['n_train_synthetic']}", auc, sd,
                       f"{s['balanced_accuracy']:.3f}", " ".join(str(r["best_epoch"]) for r in ps), delta, mcn,
                       f"{wall[name]:.0f}" + ("" if s["args"].get("other_load") is None else
                                               f" ({100 * s['args']['other_load']:.0f}%)")])
    return show_table("classifier", ["training data", "real + synthetic images", "test AUROC (95% CI)",
                                     "sd over seeds", "balanced acc.", "best epoch per seed",
                                     "ΔAUROC vs real (95% CI), p", "McNemar: only real / only this correct, p",
                                     "wall s (other load)"], c_rows)


def summary(quality: dict, equal_n: dict, clf: dict, n_val: np.ndarray) -> str:
    def verdict(name):
        p = clf[name]["paired"]
        lo, hi = p["ci95"]
        word = "higher than" if lo > 0 else "lower than" if hi < 0 else "not distinguishable from"
        return (f"{name}: AUROC {clf[name]['auroc']:.3f}, {word} real alone (ΔAUROC {p['delta_auroc']:+.3f}, "
                f"95% CI {lo:+.3f} to {hi:+.3f})")

    sq, iq, eq, rv = quality["seed"], quality["improved"], equal_n, quality["real val"]
    return f"""**Summary** (the numbers are in the tables below). Domain quality, improved vs seed recipe, all
images: FID {iq['fid']:.1f} vs {sq['fid']:.1f}, KID×1e3 {1e3 * iq['kid_mean']:.1f} vs {1e3 * sq['kid_mean']:.1f},
precision {iq['precision']:.2f} vs {sq['precision']:.2f}, recall {iq['recall']:.2f} vs {sq['recall']:.2f}; at equal N
({int(n_val.sum())} images) FID {eq['improved']['fid'][0]:.1f} and {eq['seed']['fid'][0]:.1f} against
{rv['fid']:.1f} for real val images, recall {eq['improved']['recall'][0]:.2f} and {eq['seed']['recall'][0]:.2f}
against {rv['recall']:.2f}. Near copies of training images: {iq['near_copies']} (improved) and {sq['near_copies']}
(seed) of {iq['n_fake']} in pixel space, {iq['near_copies_features']} and {sq['near_copies_features']} in feature
space (about 1% expected by chance). Classifier, against the real-only baseline (AUROC {clf['real']['auroc']:.3f}):

{chr(10).join(f"- {verdict(n)}" for n in clf if n != "real")}
"""


def main(workdir: str = None, seeds: int = 5, epochs: int = 15, patience: int = 5, size: int = 64,
         draws: int = 20, reuse: bool = False, out: str = None):
    """Run everything in WORKDIR/eval and write the "gan-eval" section of docs/benchmarks.md.

    Args:
        workdir: bench/experiments/gan_quality.py's work folder (nih64.h5, seed.h5, improved.h5); default: the
            benchmarks' work folder "quality" (see common.work_dir).
        seeds: classifier trainings per configuration (seeds 0..seeds-1).
        epochs: most epochs per training (early stopping on real val AUROC, ``patience``).
        patience: epochs without a better val AUROC before stopping.
        size: classifier input size.
        draws: random equal-N subsets of generated images for the comparison with the real-vs-real reference.
        reuse: reuse classifier runs already in WORKDIR/eval with the same settings (to re-make the tables only).
        out: markdown file to update (default docs/benchmarks.md; "" writes nothing).
    """
    record_start()
    t_start = time.perf_counter()
    work = work_dir(workdir, "quality")
    data = work / "nih64.h5"
    samples = {r: work / f"{r}.h5" for r in COMPARED}
    missing = [p for p in (data, *samples.values()) if not p.is_file()]
    if missing:
        sys.exit(f"{', '.join(map(str, missing))} missing: run `python bench/experiments/gan_quality.py --workdir "
                 f"{work}` first (it builds nih64.h5, trains both recipes and samples seed.h5 and improved.h5)")
    ev = work / "eval"
    ev.mkdir(parents=True, exist_ok=True)
    split = {s: H5ImageDataset(data, s) for s in ("train", "val", "test")}
    classes = split["train"].classes
    counts = {s: np.bincount(d.labels, minlength=len(classes)) for s, d in split.items()}
    settings = dict(seeds=seeds, epochs=epochs, size=size, patience=patience, reuse=reuse)
    wall = {}

    # 1. real baseline
    real, wall["real"] = _classify(work, "real", data, **settings)
    # 2. domain quality with the baseline's seed-0 model as the feature network
    ckpt = ev / "real" / "model-seed0.pt"
    t0 = time.perf_counter()
    quality, equal_n = domain_quality(data, samples, ev, f"classifier:{ckpt}", draws, counts["val"])
    wall["quality"] = time.perf_counter() - t0
    # 3. usefulness: real + synthetic (paired with the real baseline) and TSTR
    clf = {"real": real}
    for r in COMPARED:
        clf[f"real + {r}"], wall[f"real + {r}"] = _classify(
            work, f"real+{r}", data, **settings, synthetic=str(samples[r]), baseline=str(ev / "real"))
        clf[f"{r} only (TSTR)"], wall[f"{r} only (TSTR)"] = _classify(
            work, f"tstr-{r}", data, **settings, synthetic=str(samples[r]), synthetic_only=True,
            baseline=str(ev / "real"))
    reused = (" (classifier runs reused from an earlier run of this script; this run took "
              f"{(time.perf_counter() - t_start) / 60:.0f} min)" if any(c.get("reused") for c in clf.values()) else "")
    tables = (*quality_tables(quality, equal_n, draws, counts["val"], int(counts["test"].sum())),
              classifier_table(clf, wall))
    body = describe(work, data, ckpt, classes, counts, quality, clf, tables, summary(quality, equal_n, clf,
                    counts["val"]), wall, reused, settings, draws)
    write_section("gan-eval", "Synthetic data: quality and usefulness, seed vs improved recipe (NIH 64x64)", body, out)


def describe(work: Path, data: Path, ckpt: Path, classes, counts: dict, quality: dict, clf: dict, tables: tuple,
             findings: str, wall: dict, reused: str, settings: dict, draws: int) -> str:
    """The section's text around the four tables."""
    q_table, e_table, a_table, c_table = tables
    seeds, epochs, size, patience = settings["seeds"], settings["epochs"], settings["size"], settings["patience"]
    ev, n_val, real = work / "eval", counts["val"], clf["real"]

    def cnt(s):
        return ", ".join(f"{n} {c}" for c, n in zip(classes, counts[s]))

    fs = real["per_seed"][0]
    weak = ": a network after one epoch of training, so a weakly trained feature space" if fs["best_epoch"] == 1 else ""
    thr = quality["seed"]["near_copy_threshold"], quality["seed"]["near_copy_threshold_features"]
    return f"""Real NIH images at 64x64 (`{data}`, split by patient: train {cnt('train')}; val {cnt('val')}; test
{cnt('test')}) and the generated images of both recipes from the "GAN quality" section (`seed.h5`,
`improved.h5`: 500 per class, made by `bench/experiments/gan_quality.py --workdir {work}`). Everything on CPU; wall
time {sum(wall.values()) / 60:.0f} min for the classifier trainings and quality measurements{reused}, OpenMP threads
sleeping when idle (`OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY")}`: the machine was shared).

{findings}
**Domain quality.** Features: the penultimate layer (512-d) of the real baseline's seed-0 ResNet-18 (the "real" row
of the classifier table below; `fid_is.py --features classifier:{ckpt}`), generated images against the real *test*
images, per class and overall. KID: unbiased MMD² (cubic kernel), mean ± sd over 100 subsets of min(1000, n real, n
compared) images. Precision/recall: k-NN manifolds, k = 3, in the same 512-d space (not VGG-16, so not comparable in
number with papers). The reference row compares the real *val* images (other patients) with the same real test
images: what two real samples of this size look like in this space. The generated "all" rows are 50/50 by class
against a 70/30 real test set, which by itself adds to their distances; the per-class rows and the equal-N table
below (drawn with the val split's class mix, as the reference) do not have this mismatch.

{q_table}

FID depends on the number of images (it is biased upward at small N, and the 512-d covariance of 27–90 real
images is rank-deficient), so the rows above only compare with rows at the same counts: the generated rows
with each other, not with the reference row. For that comparison, the generated images were subsampled to the
val split's size and class mix ({int(n_val.sum())} images: {cnt('val')}), {draws} random draws, mean ± sd:

{e_table}

**Memorisation audit** (fid_is's): each generated image's nearest real training image, against the real test
images' nearest training image; a generated image closer than the 1st percentile of test-to-train distances
is a near copy (thresholds: {thr[0]:.3g} in pixel space, {thr[1]:.3g} in feature space; they depend on the real
images only, so they are the same for both recipes). About 1% of generated images fall under the threshold
without any copying, since 1% of real test images do by construction. Pixel distances: Euclidean over
the 64x64 image, pixels scaled to [0, 1]. Closest-pair figures (they show real
training images, so they stay in `{ev}`, out of the repository): `quality-<recipe>-closest-*.png`.

{a_table}

**Usefulness for a classifier** (train_resnet's protocol, `cxrgan.classify.train.run`): ResNet-18 from scratch, input
{size}x{size}, {seeds} seeds (0–{seeds - 1}), at most {epochs} epochs, early stopping on real val AUROC (patience
{patience}), tested on the {int(counts['test'].sum())} real test images. "real + recipe": the real training split plus
as many synthetic images per class as real ones (train_resnet's default ratio 1; a different seeded subset per
seed); "TSTR": all 1,000 synthetic images, no real ones (val and test still real). AUROC: mean over seeds, 95%
bootstrap CI over test images of that mean. ΔAUROC: against the real baseline on the same test images, paired
bootstrap (1,000 resamples); McNemar: exact test on the seed-averaged predictions' accuracy (threshold 0.5).
Equivalent to `tools/train_resnet.py --data {data} --size {size} --epochs {epochs} --seeds {seeds} [--synthetic
FILE.h5 [--synthetic-only]] --baseline {ev}/real --device cpu`.

{c_table}

Caveats. The domain feature network is trained on the same real training split the GANs learnt from (and
selected on the real val split), so the feature space is shaped by exactly those images: it may reward
generated images for resembling the training images, and it encodes mainly what separates the two classes
there, not everything that makes an image look real; it is one network (seed 0), not an average over seeds,
and early stopping kept its epoch-{fs['best_epoch']} weights (val AUROC {fs['val_auroc']:.3f}; test AUROC
{fs['auroc']:.3f} against the {seeds}-seed mean of {real['auroc']:.3f}){weak}.
All counts are small: {int(counts['test'].sum())} real test images ({counts['test'][1]} {classes[1]}),
{int(counts['val'].sum())} val images ({counts['val'][1]} {classes[1]}) for early stopping, so AUROC intervals
are wide, early stopping is noisy, and FID/KID per class rest on {counts['test'][1]}–{counts['test'][0]} real
images. One GAN training run per recipe: the recipe comparison does not include GAN-training variability.
"""


if __name__ == "__main__":
    fire.Fire(main)
