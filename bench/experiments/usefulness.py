"""Do synthetic images help a classifier more than the obvious controls? The evaluation-v2 protocol on the shipped
real subset (data/nih-mini, NIH 64x64, split by patient), at several fractions of the real training patients:

- real: the kept real training images only;
- real + oversampling: plus as many re-drawn real training images as the synthetic arm adds;
- real + augmentation: plus as many classically augmented real copies;
- real + synthetic: plus synthetic images from a GAN trained on that fraction's patients only (a GAN trained on
  every patient would carry the held-back ones into the low-data arms).

Another recipe (``--recipe diffusion``) is judged against the same control arms by a second work folder that takes
the control arms from the first one (``--controls-from``): same data file, same classifier seeds, same test images.

Every arm trains ``seeds`` ResNet-18s with train_resnet's protocol (cxrgan.classify.train.run); intervals are the
seed-aware ones (spread between training runs plus the choice of test images); the synthetic arm is compared with
each of the others on the same test images. Writes the "usefulness" section of docs/benchmarks.md and the
data-efficiency figure docs/figures/usefulness-efficiency.png.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the machine is shared

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (ROOT, arm_cells, as_list, log, record_start, show_table, train_for, work_dir,  # noqa: E402
                    write_section)
from cxrgan.classify.train import ClassifierConfig, run
from cxrgan.data.ingest import IngestConfig, build_dataset
from cxrgan.data.reader import H5ImageDataset
from cxrgan.generative.recipes import DEFAULT_RECIPE, RECIPES
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.generative.train import GanConfig, train
from cxrgan.report import ClassifierRun, efficiency_figure

ARMS = {  # name -> train_resnet options besides data, fraction and seeds
    "real": {},
    "real + oversampling": {"control": "oversample"},
    "real + augmentation": {"control": "augment"},
    "real + synthetic": {"synthetic": True},
}


def _slug(name: str) -> str:
    return name.replace(" + ", "+").replace(" ", "-")


def synthetic_for(work: Path, data: Path, fraction: float, recipe: str, kimg: float | None, n: int,
                  gan_args: dict, minutes: float | None = None) -> Path:
    """Samples of a GAN trained on ``fraction`` of the real training patients (made once, then reused)."""
    out = work / f"fraction-{fraction:g}" / "synthetic.h5"
    if out.is_file():
        return out
    log(f"fraction {fraction:g}: training the {recipe} GAN on that fraction's patients")
    base = work / f"fraction-{fraction:g}" / "gan"
    runs = [(base, None)] if RECIPES[recipe].conditional else [(Path(f"{base}-c{c}"), c) for c in (0, 1)]
    for run_dir, cls in runs:
        cfg = dict(data=str(data), out=str(run_dir), recipe=recipe, cls=cls, real_fraction=fraction, seed=0,
                   device="cpu", **gan_args)
        if minutes:  # equal training time with another recipe, in chunks of epochs
            train_for(cfg, minutes, chunk=20)
        else:
            train(GanConfig(kimg=kimg, **cfg))
    gens = resolve_generators(",".join(str(r) for r, _ in runs), base, [0, 1], torch.device("cpu"))
    sample_to_file(out, gens, n, 0, torch.device("cpu"))
    return out


def classify(work: Path, data: Path, fraction: float, arm: str, synthetic: Path, common: dict, reuse: bool) -> dict:
    out = work / f"fraction-{fraction:g}" / _slug(arm)
    if reuse and (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    opts = dict(ARMS[arm])
    if opts.pop("synthetic", False):
        opts["synthetic"] = str(synthetic)
    if arm != "real":  # compare with real and, for the synthetic arm, with both controls
        others = ["real"] if arm != "real + synthetic" else [a for a in ARMS if a != arm]
        opts["baseline"] = ",".join(str(out.parent / _slug(a)) for a in others)
    log(f"fraction {fraction:g}, {arm}: {common['seeds']} seeds")
    t0 = time.perf_counter()
    s = run(ClassifierConfig(overwrite=True, data=str(data), out=str(out), real_fraction=fraction, device="cpu",
                             **common, **opts))
    s["args"]["seconds"] = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(s, indent=2))
    return s


def borrow_controls(work: Path, source: Path, fractions: list[float]) -> None:
    """Link the data file and the control arms' runs of ``source`` into ``work`` (made once, then reused)."""
    for name in ["nih-mini-64.h5", *(f"fraction-{f:g}/{_slug(a)}" for f in fractions for a in ARMS
                                      if a != "real + synthetic")]:
        if not (source / name).exists():
            raise SystemExit(f"--controls-from {source}: {name} is missing; run this script there first")
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(work / name):
            (work / name).symlink_to((source / name).resolve())


def prepare(work: Path, fracs: list[float], controls_from: str | None, synthetic: str | None, reuse: bool) -> Path:
    """The work folder: borrowed control arms, a given samples file, the data file (built once). Returns the
    data file."""
    work.mkdir(parents=True, exist_ok=True)
    if controls_from:
        if not reuse:  # the borrowed arms are links: retraining them would overwrite the other folder's runs
            raise SystemExit("--controls-from reuses that folder's control arms; it cannot be combined with "
                             "--reuse False")
        borrow_controls(work, Path(controls_from), fracs)
    data = work / "nih-mini-64.h5"
    if synthetic:
        if fracs != [1.0]:
            raise SystemExit("--synthetic is for --fractions 1 only (a generator trained on every training patient)")
        link = work / "fraction-1" / "synthetic.h5"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            link.symlink_to(Path(synthetic).resolve())
    if not data.is_file():
        build_dataset(IngestConfig(src=str(ROOT / "data" / "nih-mini"), out=str(data), size=64, balance=False,
                                   workers=1, seed=0))
    return data


def table_rows(results: dict) -> tuple[list[list[str]], list[str]]:
    """The table's rows (fraction, arm, images, AUROC, sd, Δ cells) and a verdict line per synthetic comparison."""
    rows, verdicts = [], []
    for (f, arm), s in results.items():
        ps = s["per_seed"][0]
        extra = ps.get("n_train_synthetic", 0) + ps.get("n_train_control", 0)
        auroc, *deltas = arm_cells(s, p_values=True, missing="")
        sd = f"{s['auroc_sd']:.3f}" if s.get("auroc_sd") is not None else "–"
        rows.append([f"{f:g}", arm, f"{ps['n_train_real']} + {extra}", auroc, sd, *deltas])
        if arm == "real + synthetic":
            for other, p in {Path(c["baseline"]).name: c for c in s.get("comparisons", [])}.items():
                lo_d, hi_d = p["ci95"]
                word = "beats" if lo_d > 0 else "loses to" if hi_d < 0 else "does not beat"
                verdicts.append(f"- fraction {f:g}: synthetic {word} {other.replace('+', ' + ')} (ΔAUROC "
                                f"{p['delta_auroc']:+.3f}, 95% CI {lo_d:+.3f} to {hi_d:+.3f})")
    return rows, verdicts


def main(recipe: str = DEFAULT_RECIPE, kimg: float = None, fractions: str = "0.25,0.5,1", seeds: int = 5,
         epochs: int = 15, patience: int = 5, n: int = 500, workdir: str = None,
         reuse: bool = True, gan_args: dict = None, out: str = None, figure: str = None, minutes: float = None,
         controls_from: str = None, synthetic: str = None, section: str = "usefulness",
         title: str = "Usefulness against control arms and the data-efficiency curve (nih-mini)"):
    """Everything above; ``kimg`` None trains the recipe's default length, ``minutes`` instead trains for that much
    training time; ``gan_args`` adds train_dcgan options; ``controls_from`` reuses another work folder's control
    arms (and data file); ``synthetic`` takes an existing samples file (of a generator trained on the real
    training split only, real fraction 1) instead of training one; ``section``/``title`` name the section written.
    ``workdir``: the benchmarks' work folder "usefulness" unless given (see common.work_dir); ``recipe``: the
    library's default recipe unless given."""
    record_start()
    work = work_dir(workdir, "usefulness")
    fracs = as_list(fractions, float)
    data = prepare(work, fracs, controls_from, synthetic, reuse)
    common = dict(epochs=epochs, seeds=seeds, size=64, patience=patience)
    results, t_start = {}, time.perf_counter()
    for f in fracs:
        samples = synthetic_for(work, data, f, recipe, kimg, n, gan_args or {}, minutes)
        for arm in ARMS:
            results[(f, arm)] = classify(work, data, f, arm, samples, common, reuse)
    rows, verdicts = table_rows(results)
    table = show_table("usefulness", ["real fraction", "arm", "train images (real + extra)",
                                      "test AUROC [95% seed-aware CI]", "sd over seeds", "Δ vs real",
                                      "Δ vs oversampling", "Δ vs augmentation"], rows)
    runs = [ClassifierRun(f"{f:g}/{arm}", work / f"fraction-{f:g}" / _slug(arm), s) for (f, arm), s in results.items()]
    fig = Path(figure) if figure else ROOT / "docs" / "figures" / f"{section}-efficiency.png"
    drew = efficiency_figure(runs, fig)
    counts = {s: np.bincount(H5ImageDataset(data, s).labels, minlength=2).tolist() for s in ("train", "val", "test")}
    shown = fig.relative_to(ROOT) if fig.is_relative_to(ROOT) else fig
    figure_line = f"Figure: `{shown}` (AUROC against the real fraction, every arm)." if drew else ""
    length = (f"the given samples file `{synthetic}`" if synthetic else f"{minutes:g} min of training" if minutes
              else "its default length" if kimg is None else f"{kimg:g} kimg")
    borrowed = (f" The control arms are those of `{controls_from}` (same data, seeds and test images), not run again."
                if controls_from else "")
    body = f"""The shipped real subset (`data/nih-mini`, 64x64, split by patient; No Finding / Infiltration: train
{counts['train']}, val {counts['val']}, test {counts['test']}). At each fraction of the real training patients (nested:
smaller fractions are subsets of larger ones), four arms, {seeds} classifier seeds each (ResNet-18 from scratch,
64x64, at most {epochs} epochs, early stopping on real val AUROC with patience {patience}), tested on the real test
images. The synthetic arm's generator (`{recipe}`, {length}, seed 0)
was trained on that fraction's patients only; it adds as many synthetic images per class as there are real ones
(ratio 1), and the control arms add as many real copies (re-drawn; or classically augmented: small rotation, scale,
shift, brightness, contrast, no flips). Intervals: seed-aware 95% (Welch t over the classifier runs plus the paired
test-image bootstrap). Δ columns: paired comparisons on the same test images. Wall time
{(time.perf_counter() - t_start) / 60:.0f} min on the CPU (runs reused from earlier invocations count as 0).{borrowed}

{table}

Verdicts for the synthetic arm:

{chr(10).join(verdicts)}

{figure_line}
"""
    write_section(section, title, body, out)


if __name__ == "__main__":
    fire.Fire(main)
