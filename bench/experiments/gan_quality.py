"""Seed recipe vs improved recipe on real NIH images at 64x64, at equal training wall-clock.

Both recipes train on the same dataset (../shared/data/nih64, all "No Finding" and "Infiltration" images, split by
patient); the seed recipe as the study did (two DCGANs, 20 epochs); the improved one for the same training time.
Quality without a pretrained network: sliced Wasserstein distance on Laplacian pyramids (SWD, lower is better)
between 500 generated and all real images of each class; memorisation: each generated image's nearest real
training image in pixel space against the real test images' nearest training image.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import NIH64, ROOT, nih64_splits, record_start, show_table, swd, work_dir, write_section  # noqa: E402
from cxrgan.data.reader import H5ImageDataset
from cxrgan.figures import save_grid
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.generative.train import GanConfig, train


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Root-mean-square pixel distance (0-255 scale) from each query image to its nearest reference image."""
    q = torch.from_numpy(queries.reshape(len(queries), -1)).double()
    r = torch.from_numpy(reference.reshape(len(reference), -1)).double()
    return (torch.cdist(q, r).min(dim=1).values / np.sqrt(q.shape[1])).numpy()


def _train_timed(cfg: GanConfig) -> float:
    return train(cfg)["seconds"]


def train_and_sample(work: Path, data: Path, epochs: int, n: int, seed: int) -> tuple[dict, dict]:
    """The seed recipe for ``epochs``, the improved one for the same training time; ``n`` samples per class of
    each (WORK/seed.h5, WORK/improved.h5). Returns the samples and the training record."""
    for run in ("seed-c0", "seed-c1", "improved"):  # equal wall-clock is measured afresh: an earlier run would resume
        shutil.rmtree(work / run, ignore_errors=True)
    seed_time = sum(_train_timed(GanConfig(data=str(data), out=str(work / f"seed-c{c}"), recipe="seed", cls=c,
                                           epochs=epochs, seed=seed, device="cpu")) for c in (0, 1))
    improved_time, improved_epochs = 0.0, 0
    while improved_time < seed_time:
        improved_epochs += 1
        improved_time += _train_timed(GanConfig(data=str(data), out=str(work / "improved"), recipe="improved",
                                                epochs=improved_epochs, seed=seed, device="cpu"))
    runs = {"seed": f"{work}/seed-c0/last.pt,{work}/seed-c1/last.pt", "improved": f"{work}/improved/last.pt"}
    samples = {}
    for name, ckpts in runs.items():
        gens = resolve_generators(ckpts, work, [0, 1], torch.device("cpu"))
        sample_to_file(work / f"{name}.h5", gens, n, seed, torch.device("cpu"))
        samples[name] = H5ImageDataset(work / f"{name}.h5", "synthetic", in_memory=True)
    return samples, {"seed_time": seed_time, "improved_time": improved_time, "improved_epochs": improved_epochs}


def score_rows(real: dict, samples: dict, seed: int, figs: Path) -> list[list]:
    """SWD and nearest-neighbour rows per class (and the real floor row); a grid of generated images per class."""
    rows = []
    for c, cname in enumerate(real["train"].classes):
        real_all = np.concatenate([d.images[d.labels == c] for d in real.values()])
        train_c = real["train"].images[real["train"].labels == c]
        test_c = real["test"].images[real["test"].labels == c]
        baseline = nearest_distances(test_c, train_c)
        panels = {}  # generated images only: real NIH images stay out of the repository
        for name, s in samples.items():
            fake = s.images[s.labels == c]
            q = swd(real_all, fake, seed=seed)
            nn = nearest_distances(fake, train_c)
            rows.append([cname, name, f"{q['swd_64']:.0f}", f"{q['swd_32']:.0f}", f"{q['swd_16']:.0f}",
                         f"{q['swd_mean']:.0f}", f"{np.median(nn):.1f}", f"{np.median(baseline):.1f}",
                         int((nn < baseline.min()).sum())])
            panels[f"{name} {cname}"] = fake[:16]
        floor = swd(train_c, test_c, seed=seed)
        rows.append([cname, "real test vs real train (floor)", f"{floor['swd_64']:.0f}", f"{floor['swd_32']:.0f}",
                     f"{floor['swd_16']:.0f}", f"{floor['swd_mean']:.0f}", "", "", ""])
        figs.mkdir(parents=True, exist_ok=True)
        save_grid(figs / f"gan-nih64-{c}.png", panels, f"{cname}: seed recipe vs improved recipe (64x64)", cols=4)
    return rows


def main(src: str = str(NIH64), epochs: int = 20, n: int = 500, seed: int = 0, workdir: str = None,
         out: str = None, figures: str = str(ROOT / "docs" / "figures")):
    """Run the comparison and write its section of docs/benchmarks.md (and grids under docs/figures). ``workdir``
    (default: the benchmarks' work folder "quality", see common.work_dir) keeps the dataset, runs and samples that
    bench/experiments/gan_eval.py and bench/speed/fid_speed.py read."""
    record_start()
    work = work_dir(workdir, "quality")
    data, real = nih64_splits(work, src, seed)
    classes = real["train"].classes
    samples, timing = train_and_sample(work, data, epochs, n, seed)
    seed_time, improved_time, improved_epochs = timing["seed_time"], timing["improved_time"], timing["improved_epochs"]
    rows = score_rows(real, samples, seed, Path(figures))

    headers = ["class", "images from", "SWD 64", "SWD 32", "SWD 16", "SWD mean", "median NN dist", "test→train NN",
               "closer than any test image"]
    table = show_table("seed vs improved", headers, rows)
    mean_swd = {name: [float(r[5]) for r in rows if r[1] == name] for name in ("seed", "improved")}
    change = ", ".join(f"{cname} {100 * (i / s - 1):+.0f}%" for cname, s, i in
                       zip(classes, mean_swd["seed"], mean_swd["improved"]))
    body = f"""Real NIH images at 64x64 ({src}: "No Finding" and "Infiltration", unbalanced, split by patient;
{len(real['train'])} training images). Seed recipe: two DCGANs (one per class), {epochs} epochs each,
{seed_time:.0f} s of training in all. Improved recipe: one conditional model, trained for the same wall-clock
({improved_epochs} epochs, {improved_time:.0f} s). {n} images per class sampled from each (EMA weights for the improved
recipe). SWD x1e3 between the generated images and all real images of the class, per pyramid level (64 = finest
detail) and averaged; lower is better. The "floor" row compares the real test images with the real training
images: a reference for real-vs-real differences, measured on smaller sets (so with more sampling noise, and
not a bound the generated rows cannot cross). NN dist: root-mean-square pixel distance (0-255) from each
generated image to its nearest real training image of the class; "test→train" is the same for the real test
images (other patients), so a generated image closer than every real test image is a candidate copy.
Grids: `docs/figures/gan-nih64-0.png`, `docs/figures/gan-nih64-1.png`.

Improved vs seed, mean SWD: {change} (negative = better). One training run per recipe; the grids show the
improved samples' limited diversity, which SWD does not capture (precision/recall will).

{table}
"""
    write_section("gan-quality", "GAN quality: seed vs improved recipe on NIH 64x64", body, out)


if __name__ == "__main__":
    fire.Fire(main)
