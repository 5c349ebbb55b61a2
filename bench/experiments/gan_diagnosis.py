"""Why a GAN recipe's samples do not cover the real distribution: one long run on NIH 64x64 with metric snapshots.

Steps, all with the project's own code:
1. the real dataset (nih64.h5 as bench/experiments/gan_quality.py builds it, split by patient) and a real-data
   classifier (train_resnet's protocol, one seed) whose penultimate layer is the feature space, as in the
   "Synthetic data" section;
2. train_dcgan for ``kimg`` thousand images shown, a metric snapshot every ``snapshot_kimg``: validation KID,
   precision, recall, pixel diversity, and the discriminator's mean logit on training, validation and generated
   images (generative/snapshots.py);
3. at the end, the same measures for the raw generator beside its EMA, and the real-vs-real reference (real test
   images in place of generated ones), which is what a generator that covers the distribution would score.

The run resumes from its checkpoint when interrupted; --reuse skips steps whose results exist.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in gan_eval.py: idle OpenMP threads sleep

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import NIH64, ROOT, log, nih64_splits, record_start, show_table, work_dir, write_section  # noqa: E402
from cxrgan.classify.train import ClassifierConfig, run
from cxrgan.figures import plt, save_figure
from cxrgan.generative.checkpoint import load_generator
from cxrgan.generative import networks
from cxrgan.generative.checkpoint import load
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.snapshots import Snapshots
from cxrgan.generative.train import GanConfig, train
from cxrgan.metrics.audit import pixel_vectors
from cxrgan.metrics.evaluate import ImageSets, QualityConfig, set_metrics
from cxrgan.metrics.features import feature_net

COLS = ["kimg", "kid", "precision", "recall", "pixel_diversity", "d_train", "d_val", "d_fake", "rt_train", "rt_val"]


def _num(v, fmt=".3f") -> str:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return "–"


def figure(rows: list[dict], path: Path, title: str) -> None:
    """Left: recall, precision, pixel diversity, KID x10 against kimg; right: the discriminator's mean logits."""
    k = np.array([float(r["kimg"]) for r in rows])
    col = {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in rows]) for c in COLS[1:]}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for c, label in (("recall", "recall"), ("precision", "precision"), ("pixel_diversity", "pixel diversity"),
                     ("kid", "KID x10")):
        a.plot(k, col[c] * (10 if c == "kid" else 1), marker="o", ms=3, label=label)
    a.set_xlabel("thousands of real images shown")
    a.set_title("generated vs real validation images")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    for c, label in (("d_train", "D(real training)"), ("d_val", "D(real validation)"), ("d_fake", "D(generated)")):
        b.plot(k, col[c], marker="o", ms=3, label=label)
    b.set_xlabel("thousands of real images shown")
    b.set_title("discriminator: mean logit, no augmentation")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def train_run(work: Path, data: Path, real: dict, recipe: str, kimg: float, snapshot_kimg: float, snapshot_n: int,
              seed: int, clf_epochs: int) -> tuple[dict, str, float, float]:
    """The real-data classifier (once), then the long run with snapshots. Returns the run's result, the feature
    space, its training seconds and kimg shown."""
    clf_dir = work / "eval" / "real"
    ckpt = clf_dir / f"model-seed{seed}.pt"
    if not ckpt.is_file():
        log(f"real-data classifier: {clf_epochs} epochs, one seed")
        run(ClassifierConfig(overwrite=True, data=str(data), out=str(clf_dir), epochs=clf_epochs, seeds=1, seed=seed,
                             size=64, device="cpu"))
    features = f"classifier:{ckpt}"
    gan_dir = work / recipe
    log(f"{recipe}: training to {kimg} kimg, snapshots every {snapshot_kimg} kimg")
    epochs_per_snapshot = max(1, round(snapshot_kimg * 1000 / ((len(real["train"]) // 32) * 32)))
    result = train(GanConfig(data=str(data), out=str(gan_dir), recipe=recipe, kimg=kimg, seed=seed, device="cpu",
                             snapshot_kimg=snapshot_kimg, snapshot_n=snapshot_n, snapshot_features=features,
                             select_snapshot=True, ckpt_every=epochs_per_snapshot, keep=1))
    losses = list(csv.DictReader(open(gan_dir / "losses.csv")))
    # training time: this call's, or (a finished run) the loss history's clock, which restarts on each resume
    seconds = result.get("seconds") or sum(float(a["seconds"]) for a, b in zip(losses, losses[1:] + [None])
                                           if b is None or float(b["seconds"]) < float(a["seconds"]))
    return result, features, seconds, result.get("kimg") or float(losses[-1]["kimg"])


def end_measures(gan_dir: Path, data: Path, real: dict, features: str, snapshot_n: int, seed: int) -> tuple[dict, dict]:
    """The raw generator and its EMA at the end of the run, and the real-vs-real reference (real test images in
    place of generated ones), in the snapshots' space and counts."""
    snaps = Snapshots(str(data), None, snapshot_n, features, seed, torch.from_numpy(real["train"].images),
                      torch.from_numpy(real["train"].labels), torch.device("cpu"))
    saved = load(gan_dir / "last.pt")
    model, objective = saved["model"], OBJECTIVES[saved["objective"]]
    modules = networks.build(model)
    for part, module in modules.items():
        module.load_state_dict(saved["networks"][part])

    def measure(G: torch.nn.Module) -> dict:
        row = snaps.measure(G, objective.sampler(G, model), model["latent"])
        row.update(objective.snapshot(snaps, modules, row.pop("images"), model["channels"]))
        return row

    end = {"raw generator": measure(modules[objective.sampled])}
    if saved.get("ema") is not None:
        end["EMA generator"] = measure(load_generator(gan_dir / "last.pt").network)
    net = feature_net(features, device="cpu")
    test = real["test"]
    test_f = np.concatenate([net(test.images[i:i + 64])[0] for i in range(0, len(test), 64)])
    ref = set_metrics(ImageSets(snaps.val_features, test_f, np.zeros((0, 0)), np.zeros((0, 0)), snaps.val_pixels,
                                pixel_vectors(test.images, snaps.side)), QualityConfig(real="", kid_subsets=50,
                                                                                        seed=seed))
    return end, ref


def findings(rows: list[dict], end: dict, ref: dict) -> list[str]:
    def f(c, r):
        return float(r[c]) if r[c] != "" else float("nan")

    recalls = [f("recall", r) for r in rows]
    gap_first = f("d_train", rows[0]) - f("d_val", rows[0])
    gap_last = f("d_train", rows[-1]) - f("d_val", rows[-1])
    lines = [
        f"- Recall against the validation images: at most {max(recalls):.3f} over {len(rows)} snapshots "
        f"({rows[int(np.nanargmax(recalls))]['kimg']} kimg), {recalls[-1]:.3f} at the end; the real test images "
        f"score {ref['recall']:.3f} against the same validation images.",
        f"- Pixel diversity (generated over real spread): {_num(rows[0]['pixel_diversity'])} at the first snapshot, "
        f"{_num(rows[-1]['pixel_diversity'])} at the end (real test images: {ref['pixel_diversity']:.3f}).",
        f"- Discriminator overfitting: mean logit on training minus validation images {gap_first:+.2f} at "
        f"{rows[0]['kimg']} kimg, {gap_last:+.2f} at {rows[-1]['kimg']} kimg; share of positive logits on training "
        f"images (ADA's r_t) {_num(rows[-1]['rt_train'])}, on validation images {_num(rows[-1]['rt_val'])}.",
    ]
    if "EMA generator" in end:
        lines.append(f"- EMA vs raw generator at the end: recall {_num(end['EMA generator']['recall'])} vs "
                     f"{_num(end['raw generator']['recall'])}, pixel diversity "
                     f"{_num(end['EMA generator']['pixel_diversity'])} vs "
                     f"{_num(end['raw generator']['pixel_diversity'])}.")
    return lines


def main(src: str = str(NIH64), recipe: str = "improved", kimg: float = 160, snapshot_kimg: float = 10,
         snapshot_n: int = 500, seed: int = 0, clf_epochs: int = 15, workdir: str = None,
         out: str = None, figures: str = str(ROOT / "docs" / "figures")):
    """Run the diagnosis and write its section of docs/benchmarks.md (and a figure under docs/figures).
    ``workdir``: the benchmarks' work folder "diagnosis" unless given (see common.work_dir)."""
    record_start()
    work = work_dir(workdir, "diagnosis")
    data, real = nih64_splits(work, src, seed)
    result, features, seconds, shown = train_run(work, data, real, recipe, kimg, snapshot_kimg, snapshot_n, seed,
                                                 clf_epochs)
    ckpt, n_train, test = features.split(":", 1)[1], len(real["train"]), real["test"]
    rows = list(csv.DictReader(open(work / recipe / "metrics.csv")))
    end, ref = end_measures(work / recipe, data, real, features, snapshot_n, seed)
    end_rows = [[name, _num(m.get("kid"), ".4f"), _num(m.get("precision")), _num(m.get("recall")),
                 _num(m.get("pixel_diversity")), _num(m.get("d_train")), _num(m.get("d_val")), _num(m.get("d_fake"))]
                for name, m in end.items()]
    end_rows.append([f"real test images ({len(test)}), the reference", _num(ref["kid_mean"], ".4f"),
                     _num(ref["precision"]), _num(ref["recall"]), _num(ref["pixel_diversity"]), "", "", ""])

    png = Path(figures) / f"gan-diagnosis-{recipe}.png"
    figure(rows, png, f"{recipe} recipe on NIH 64x64: {len(rows)} snapshots to {rows[-1]['kimg']} kimg")
    table = show_table("snapshots", COLS, [[_num(r[c], ".4f" if c == "kid" else ".3f" if c != "kimg" else ".1f")
                                            for c in COLS] for r in rows])
    end_table = show_table("at the end", ["generator", "KID", "precision", "recall", "pixel diversity", "D(train)",
                                          "D(val)", "D(generated)"], end_rows)

    body = f"""Real NIH images at 64x64 (`{data}`, split by patient: {n_train} training, {len(real['val'])} validation,
{len(test)} test images). The `{recipe}` recipe trained for {shown:.1f} thousand images shown
({result.get('epochs')} epochs, {seconds / 60:.0f} min of training on the CPU, other jobs sharing the machine), with a
metric snapshot every {snapshot_kimg:g} kimg: {snapshot_n} generated images with the validation split's class
mix against the {len(real['val'])} validation images, in the feature space of a real-data ResNet-18
(`{ckpt}`, {clf_epochs} epochs, seed {seed}: the "Synthetic data" section's protocol). KID, precision/recall (k = 3)
and pixel diversity as fid_is computes them; d_* are the discriminator's mean logits without augmentation, rt_* its
share of positive logits (ADA's overfitting heuristic r_t), on 256 training images, the validation images and 256
generated ones. Small N: these numbers compare along the run and with the reference row, not with other tables.

{chr(10).join(findings(rows, end, ref))}

{table}

{end_table}

Figure: `docs/figures/{png.name}` (left: the image metrics; right: the discriminator's logits).
"""
    write_section(f"gan-diagnosis-{recipe}", f"GAN diagnosis: the {recipe} recipe over a long run (NIH 64x64)",
                  body, out)


if __name__ == "__main__":
    fire.Fire(main)
