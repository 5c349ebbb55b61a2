"""The diffusion recipe against the best GAN recipe at equal training time on NIH 64x64: image metrics per class,
the memorisation audit, and sampling speed.

Each GAN seed of the ablation (bench/experiments/gan_ablation.py, same work folder, same splits, same real-data
classifier) trained for a fixed wall-clock; the diffusion model gets the same time per seed, then its EMA weights sample
``n`` images per class with EDM's Heun sampler, scored exactly as the ablation scores a GAN: fid_is's KID,
precision/recall (k = 3) and pixel diversity against the real test split in the real-data ResNet-18's features, the
shift-tolerant near-copy count and the median distance to the nearest training image against held-out real images.
Sampling speed: 500 images per class at 64x64 with ``steps`` Heun steps, on the threads given.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (NIH64, ROOT, arm_cells, as_list, bench_dir, continue_run, log, metric_cells,  # noqa: E402
                    nih64_splits, real_classifier, record_start, reference_rows, show_table, train_for, work_dir,
                    write_section)
from cxrgan.generative.diffusion import SOLVERS
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.metrics.evaluate import QualityConfig, evaluate

GAN_RUN = "limited"  # the ablation's folder of the `limited` recipe


def score(run_dir: Path, data: Path, features: str, n: int, seed: int, steps: int, ckpt: Path | None = None) -> dict:
    gens = resolve_generators(str(ckpt or run_dir), run_dir, [0, 1], torch.device("cpu"))
    t0 = time.perf_counter()
    sample_to_file(run_dir / "samples.h5", gens, n, seed, torch.device("cpu"), steps=steps)
    sample_seconds = time.perf_counter() - t0
    m = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=str(run_dir / "samples.h5"),
                               features=features, out=str(run_dir / "fid_is.json"), cache="", seed=seed,
                               device="cpu"))
    return {"per_class": m["per_class"], "near_copies": m["near_copies"],
            "near_copies_features": m["near_copies_features"], "n_fake": m["n_fake"],
            "to_train": m["audit_pixels"]["synthetic_to_train_median"],
            "held_out_to_train": m["audit_pixels"].get("held_out_to_train_median"), "sample_seconds": sample_seconds}


def network_calls(recipe: str, steps: int, solver: str | None = None) -> int:
    """Network calls per image of a diffusion recipe's sampler with ``solver`` (None: the recipe's own: EDM's Heun
    2 * steps - 1, DDIM one per step)."""
    return SOLVERS[solver or ("euler" if recipe == "diffusion-ddpm" else "heun")](steps)


def train_and_score(minutes: float = 14, seed: int = 0, n: int = 500, steps: int = None,
                    workdir: str = None, recipe: str = "diffusion", tag: str = "",
                    fast_steps: int = 0, continue_tag: str = None) -> None:
    """One seed: train a diffusion recipe for ``minutes`` of training time, sample, score (scores.json). ``steps``
    defaults to 35 network calls per image for either recipe (EDM's Heun 18 steps, DDIM 35); ``fast_steps`` also
    scores a sample with that many steps (the record's ``fast``). ``tag`` is added to the run folder's name.
    ``continue_tag``: start from the finished run of that tag (e.g. ``-35min``) and train ``minutes`` more; the
    record counts both runs' training time."""
    steps = steps or (35 if recipe == "diffusion-ddpm" else 18)
    work = work_dir(workdir, "diagnosis")
    data, _ = nih64_splits(work, NIH64, 0)
    features = f"classifier:{real_classifier(work)}"
    run_dir = work / "ablation" / f"{recipe}{tag}-s{seed}"
    source = work / "ablation" / f"{recipe}{continue_tag}-s{seed}"
    before = 0.0 if continue_tag is None else continue_run(source, run_dir)
    log(f"{recipe}, seed {seed}: {minutes} min of training")
    # grids (and epoch checkpoints) every 20 epochs: a diffusion grid costs 19 network calls per image
    trained = train_for(dict(data=str(data), out=str(run_dir), recipe=recipe, seed=seed, device="cpu",
                             ckpt_every=20), minutes, chunk=20)
    seconds = before + trained["seconds"]
    record = {"seed": seed, "recipe": recipe, "calls": network_calls(recipe, steps), "kimg": trained.get("kimg"),
              "seconds": seconds, "img_per_s": 1000 * trained.get("kimg", 0) / seconds if seconds else None,
              "steps": steps}
    if fast_steps:  # first, so that samples.h5 and fid_is.json are left from the main step count
        record["fast"] = {"steps": fast_steps, "calls": network_calls(recipe, fast_steps),
                          **score(run_dir, data, features, n, seed, fast_steps)}
    record.update(score(run_dir, data, features, n, seed, steps))
    (run_dir / "scores.json").write_text(json.dumps(record, indent=2))
    log(f"{recipe}, seed {seed}: scored")


def training_time(losses_csv: Path, step: int) -> float:
    """Training seconds up to ``step`` from losses.csv, whose ``seconds`` column restarts at every resumed call."""
    total, last = 0.0, 0.0
    with open(losses_csv) as f:
        for row in csv.DictReader(f):
            if int(row["step"]) > step:
                break
            t = float(row["seconds"])
            if t < last:  # a new call of train(): bank the previous one
                total += last
            last = t
    return total + last


def score_checkpoint(seed: int = 0, recipe: str = "diffusion-ddpm", checkpoint: str = "ckpt-000040.pt",
                     n: int = 500, steps: int = None, workdir: str = None) -> None:
    """Score an epoch checkpoint of a trained run instead of its last one (scores.json), with the training time
    up to it: for equal training time when train_for's last chunk overshot the budget."""
    steps = steps or (35 if recipe == "diffusion-ddpm" else 18)
    work = work_dir(workdir, "diagnosis")
    data, _ = nih64_splits(work, NIH64, 0)
    run_dir = work / "ablation" / f"{recipe}-s{seed}"
    ckpt = run_dir / checkpoint
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    seconds = training_time(run_dir / "losses.csv", saved["step"])
    kimg = saved["nimg"] / 1000 if "nimg" in saved else None
    record = {"seed": seed, "recipe": recipe, "calls": network_calls(recipe, steps), "checkpoint": checkpoint,
              "kimg": kimg, "seconds": seconds, "img_per_s": 1000 * kimg / seconds if kimg else None, "steps": steps,
              **score(run_dir, data, f"classifier:{real_classifier(work)}", n, seed, steps, ckpt)}
    (run_dir / "scores.json").write_text(json.dumps(record, indent=2))
    log(f"{recipe}, seed {seed}: {checkpoint} scored ({kimg} kimg, {seconds:.0f} s of training)")


def sampling_speed(steps: str = "10,18", n: int = 500, threads: int = 2,
                   workdir: str = None, tag: str = "", quality: bool = False) -> list[dict]:
    """Seconds to sample ``n`` images per class at 64x64 from the seed-0 diffusion run, per entry of ``steps``:
    a step count (Heun) or SOLVER:STEPS (e.g. dpm++2m:15). With ``quality``, each sample is also scored as
    the main table scores (same seed, features and test split), after the clock stops."""
    torch.set_num_threads(threads)
    work = work_dir(workdir, "diagnosis")
    run_dir = work / "ablation" / f"diffusion{tag}-s0"
    gens = resolve_generators(str(run_dir), run_dir, [0, 1], torch.device("cpu"))
    out = []
    for spec in as_list(steps, str):
        solver, _, count = str(spec).rpartition(":")
        solver, count = solver or "heun", int(count)
        t0 = time.perf_counter()
        sample_to_file(work / "speed.h5", gens, n, 0, torch.device("cpu"), steps=count, solver=solver)
        row = {"solver": solver, "steps": count, "calls": SOLVERS[solver](count), "seconds": time.perf_counter() - t0}
        log(f"{n} per class, {solver} at {count} steps: {row['seconds']:.0f} s")
        if quality:
            data, _ = nih64_splits(work, NIH64, 0)
            m = evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=str(work / "speed.h5"),
                                       features=f"classifier:{real_classifier(work)}",
                                       out=str(work / "speed-fid_is.json"), cache="", seed=0, device="cpu",
                                       audit=False))
            row["per_class"] = m["per_class"]
        out.append(row)
    return out


def _mean_of(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return f"{np.mean(values):.4f}" if values else "–"


def usefulness_rows(workdirs: dict[str, str]) -> list[list[str]]:
    """ΔAUROC of each recipe's synthetic arm (bench/experiments/usefulness.py at real fraction 1) against the other
    arms. A relative work folder is one under the benchmarks' folder (common.bench_dir)."""
    rows = []
    for recipe, workdir in workdirs.items():
        path = bench_dir() / workdir / "fraction-1" / "real+synthetic" / "metrics.json"
        if not path.is_file():
            continue
        rows.append([recipe, *arm_cells(json.loads(path.read_text()))])
    return rows


def samples_figure(work: Path, data: Path, folders: dict[str, str], path: Path, per_panel: int = 16) -> None:
    """Real test images and the seed-0 samples of each recipe, one panel per (source, class)."""
    from cxrgan.data.reader import H5ImageDataset
    from cxrgan.figures import save_grid

    panels = {}
    sources = {"real test": H5ImageDataset(data, "test"),
               **{name: H5ImageDataset(work / "ablation" / f"{folder}-s0" / "samples.h5", "synthetic")
                  for name, folder in folders.items()
                  if (work / "ablation" / f"{folder}-s0" / "samples.h5").is_file()}}
    for name, ds in sources.items():
        for c, cls in enumerate(ds.classes):
            idx = np.flatnonzero(ds.labels == c)[:per_panel]
            panels[f"{name}: {cls}"] = ds.read_uint8(idx)
    save_grid(path, panels, "NIH 64x64: real test images and seed-0 samples (first 16 per class)", cols=4)


# bench/experiments/usefulness.py's work folders (under common.bench_dir) of the earlier runs
USEFULNESS = {"limited (GAN), 16 kimg, equal training time": "usefulness",
              "limited (GAN), 33.6 kimg (35 min)": "usefulness-gan35",
              "diffusion (EDM), 14 min": "usefulness-diffusion"}


def collect_runs(work: Path, seeds: list[int], tag: str, gan_run: str) -> dict[str, list[dict]]:
    """The scores.json records of each row group that has runs: EDM, DDPM, EDM's fast sample, the GAN."""
    def scores(folder: str) -> list[dict]:
        return [json.loads(p.read_text()) for s in seeds
                if (p := work / "ablation" / f"{folder}-s{s}" / "scores.json").is_file()]

    edm = scores(f"diffusion{tag}")
    fast = [{**r, **r["fast"]} for r in edm if "fast" in r]
    runs = {"diffusion (EDM)": edm, "diffusion-ddpm (DDPM, DDIM)": scores(f"diffusion-ddpm{tag}"),
            f"diffusion (EDM), {fast[0]['steps'] if fast else 0} Heun steps": fast, "limited (GAN)": scores(gan_run)}
    runs = {name: rs for name, rs in runs.items() if rs}
    for r in runs.get("limited (GAN)", []):  # the ablation stored no audit medians: read them from its fid_is.json
        m = json.loads((work / "ablation" / f"{gan_run}-s{r['seed']}" / "fid_is.json").read_text())
        r["to_train"] = m["audit_pixels"]["synthetic_to_train_median"]
        audit = m["audit_pixels"]  # fid_is files of that time name the held-out split's median test_to_train
        r["held_out_to_train"] = audit.get("held_out_to_train_median", audit.get("test_to_train_median"))
    return runs


def quality_rows(runs: dict[str, list[dict]], classes) -> list[list[str]]:
    rows = []
    for name, rs in runs.items():
        calls = "–" if "GAN" in name else "/".join(sorted({
            str(r.get("calls") or network_calls("diffusion-ddpm" if "ddpm" in name else "diffusion", r["steps"]))
            for r in rs}))
        for c in classes:
            rows.append([name, c, str(len(rs)), f"{np.mean([r['kimg'] for r in rs]):.1f}",
                         f"{np.mean([r['img_per_s'] for r in rs]):.1f}", calls, *metric_cells(rs, c),
                         f"{np.mean([r['near_copies'] for r in rs]):.1f}",
                         f"{_mean_of(rs, 'to_train')} / {_mean_of(rs, 'held_out_to_train')}"])
    return rows


def speed_text(speed: list[dict], classes, threads: int, scored: bool) -> str:
    """The sampling-speed paragraph and table (empty without measurements)."""
    if not speed:
        return ""

    def quality(s: dict) -> list[str]:
        if "per_class" not in s:
            return ["–"] * len(classes)
        return [f"{s['per_class'][c]['precision']:.2f} / {s['per_class'][c]['recall']:.2f}" for c in classes]

    table = show_table("sampling speed", ["solver", "steps", "network calls per image", "seconds for 2 x 500",
                                          "images per second", *(f"{c}: precision / recall" for c in classes)],
                       [[s["solver"], str(s["steps"]), str(s["calls"]), f"{s['seconds']:.0f}",
                         f"{1000 / s['seconds']:.1f}", *quality(s)] for s in speed])
    how = "; precision / recall of each sample against the test split as in the main table" if scored else ""
    return f"""Sampling speed of `diffusion` (seed 0), {threads} CPU threads, 500 images per
class at 64x64 (`sample.py --steps S --solver SOLVER`){how}:

{table}

"""


def main(minutes: float = 14, seeds: str = "0,1", speed_steps: str = "10,18", threads: int = 2,
         workdir: str = None, out: str = None, note: str = "", tag: str = "",
         gan_run: str = GAN_RUN, useful: dict = None, section: str = "diffusion", speed_quality: bool = False,
         title: str = "Diffusion recipe vs the limited GAN (NIH 64x64, equal training time)", reference: bool = False):
    """Write the section from the seeds' scores.json (train them first with train_and_score, in parallel; the
    diffusion-ddpm rows appear when its runs exist), and the usefulness work folders' ΔAUROC
    (bench/experiments/usefulness.py).

    ``tag`` picks the diffusion runs trained with that tag, ``gan_run`` the ablation folder of the GAN they are set
    against, ``useful`` maps a row name to a usefulness work folder (relative: under common.bench_dir);
    ``speed_steps`` entries are step counts (Heun) or SOLVER:STEPS (none: no speed table), and ``speed_quality``
    scores each of them too (seed 0); ``reference`` adds rows scoring the real training images in place of
    generated ones (what a generator that reproduced its training set would get). ``workdir``: the benchmarks' work
    folder "diagnosis" unless given."""
    record_start()
    work = work_dir(workdir, "diagnosis")
    data, real = nih64_splits(work, NIH64, 0)
    classes = real["train"].classes
    rows = quality_rows(collect_runs(work, as_list(seeds), tag, gan_run), classes)
    if reference:
        rows += reference_rows(data, f"classifier:{real_classifier(work)}", work, classes, before=4, after=2)
    table = show_table("diffusion vs GAN", ["recipe", "class", "seeds", "kimg in budget", "train img/s",
                                            "network calls per image", "KID", "precision", "recall",
                                            "pixel diversity", "near copies (pixels)",
                                            "median distance to train: generated / held-out real"], rows)
    speed = sampling_speed(speed_steps, 500, threads, str(work), tag, quality=speed_quality) if speed_steps else []
    speed_part = speed_text(speed, classes, threads, speed_quality)
    useful_table = show_table("usefulness", ["synthetic arm's recipe", "test AUROC [95% seed-aware CI]",
                                             "Δ vs real", "Δ vs oversampling", "Δ vs augmentation"],
                              usefulness_rows(useful or USEFULNESS))
    body = f"""Same work folder, splits and real-data ResNet-18 as the GAN ablation above; {minutes:g} min of training
time per seed (seeds {seeds}), one CPU thread per run, two runs side by side, as the GAN runs had. The diffusion
models (`diffusion`: the U-Net of `lib/cxrgan/generative/unet.py` at base 16 in EDM's preconditioning and loss;
`diffusion-ddpm`: the same U-Net as an epsilon-predicting DDPM; both 10% label dropout, 2 kimg EMA) are scored on
their final EMA weights (diffusion snapshots would cost more than training at this budget) at guidance 1 and equal
network calls per image (EDM's Heun sampler, DDIM); the GAN rows are the ablation's `limited` runs (best.pt by
validation KID). Metrics per class against the real test images as fid_is computes them (mean ± sd over seeds);
near copies of 1,000 generated images (shift-tolerant, pixels; about 1% expected by chance); the last column is
the memorisation audit's median RMS distance to the nearest training image (generated vs held-out real: generated
much closer than held-out would mean copying). {note}

{table}

{speed_part}Usefulness (bench/experiments/usefulness.py on the shipped nih-mini subset, real fraction 1,
5 classifier seeds, seed-aware 95% intervals; the control arms are shared; every synthetic arm's generator was
trained on the same training patients, for the budget its row names; nih-mini's splits are nih64's, image for
image): ΔAUROC of real + synthetic against each arm.

{useful_table}
"""
    figure = ROOT / "docs" / "figures" / f"{section}-vs-gan.png"
    samples_figure(work, data, {"GAN (limited)": gan_run, "diffusion (EDM)": f"diffusion{tag}",
                                "diffusion-ddpm": f"diffusion-ddpm{tag}"}, figure)
    body += f"\nFigure: `{figure.relative_to(ROOT)}` (real test images and seed-0 samples, per class).\n"
    write_section(section, title, body, out)


if __name__ == "__main__":
    fire.Fire({"train": train_and_score, "score": score_checkpoint, "speed": sampling_speed, "report": main})
