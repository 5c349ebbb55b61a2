"""Speed of tools/fid_is.py against torch-fidelity computing the same metrics (IS, FID, KID, precision/recall) on
the same images with the same Inception weights, both on the CPU, both as fresh processes (start-up counts).

Only speed is measured: the "real" and "generated" sets are two sets of generated images (1,000 from each GAN
recipe of bench/experiments/gan_quality.py), and the weights are random (variance-preserving init, as in
tests/test_evaluate.py), so the metric values mean nothing; they are printed side by side only to show both tools
did the same work.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import ROOT, console, cpu_seconds, record_start, show_table, work_dir, write_section  # noqa: E402
from cxrgan.metrics.inception import random_weights

# torch-fidelity's side, run as `python -c THEIRS REAL FAKE WEIGHTS BATCH KID_SUBSET_SIZE SEED OUT`: the images as
# uint8 3-channel tensors (gray replicated) through a torch Dataset, as in tests/test_evaluate.py.
THEIRS = r"""
import json, sys
import h5py, torch, torch_fidelity

real, fake, weights, batch, kid_size, seed, out = sys.argv[1:]

class RGB(torch.utils.data.Dataset):
    def __init__(self, ref):
        path, split = ref.rsplit(":", 1)
        with h5py.File(path, "r") as f:
            self.images = torch.from_numpy(f[split]["images"][:])
    def __len__(self):
        return len(self.images)
    def __getitem__(self, i):
        return self.images[i][None].expand(3, -1, -1).contiguous()

m = torch_fidelity.calculate_metrics(
    input1=RGB(fake), input2=RGB(real), isc=True, fid=True, kid=True, prc=True,
    feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights, feature_layer_prc="2048",
    batch_size=int(batch), kid_subset_size=int(kid_size), rng_seed=int(seed), cuda=False, cache=False, verbose=False)
with open(out, "w") as f:
    json.dump({k: float(v) for k, v in m.items()}, f)
"""

KEYS = [("FID", "fid", "frechet_inception_distance"), ("KID mean", "kid_mean", "kernel_inception_distance_mean"),
        ("KID std", "kid_std", "kernel_inception_distance_std"), ("IS mean", "is_mean", "inception_score_mean"),
        ("IS std", "is_std", "inception_score_std"), ("precision", "precision", "precision"),
        ("recall", "recall", "recall")]


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds of a fresh process running ``cmd``, and the share of the CPUs other work used meanwhile."""
    busy0, own0 = cpu_seconds()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
    seconds = time.perf_counter() - t0
    busy1, own1 = cpu_seconds()
    if r.returncode:
        sys.exit(f"{cmd[:3]} failed (exit {r.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / (seconds * os.cpu_count()))
    return seconds, other


def run_both(real: str, fake: str, repeat: int, batch: int, kid_subset_size: int, seed: int) -> tuple:
    """Both tools ``repeat`` times, interleaved, on the same random Inception weights. Returns the timed runs
    (ours s, its other load, theirs s, its other load) and each tool's result files."""
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "inception-random.pth"
        torch.save(random_weights(seed=0), weights)

        def ours_cmd(k):
            return [py, "tools/fid_is.py", "--real", real, "--fake", fake, "--out", str(tmp / f"ours{k}.json"),
                    "--inception-weights", str(weights), "--noaudit", "--noper-class", "--cache", "", "--batch",
                    str(batch), "--kid-subset-size", str(kid_subset_size), "--seed", str(seed), "--device", "cpu"]

        def theirs_cmd(k):
            return [py, "-c", THEIRS, real, fake, str(weights), str(batch), str(kid_subset_size), str(seed),
                    str(tmp / f"theirs{k}.json")]

        # warm the OS file cache for both tools' imports, untimed
        subprocess.run([py, "-c", "import torch, torch_fidelity, h5py, rich, fire, scipy, cxrgan.metrics.evaluate"],
                       check=True)
        runs = []
        for k in range(repeat):
            o, o_load = timed(ours_cmd(k), tmp / f"ours{k}.log")
            console.print(f"run {k + 1}: fid_is.py {o:.1f} s (other load {100 * o_load:.0f}%)")
            t, t_load = timed(theirs_cmd(k), tmp / f"theirs{k}.log")
            console.print(f"run {k + 1}: torch-fidelity {t:.1f} s (other load {100 * t_load:.0f}%); ratio {o / t:.2f}x")
            runs.append((o, o_load, t, t_load))
        ours = [json.loads((tmp / f"ours{k}.json").read_text()) for k in range(repeat)]
        theirs = [json.loads((tmp / f"theirs{k}.json").read_text()) for k in range(repeat)]
    return runs, ours, theirs


def agreement(ours: list[dict], theirs: list[dict]) -> str:
    """Each metric of both tools' first run, their relative difference, and whether every repeat gave the same."""
    rows = []
    for label, ok, tk in KEYS:
        a, b = ours[0][ok], theirs[0][tk]
        rel = abs(a - b) / max(abs(b), 1e-12)
        same = all(o[ok] == ours[0][ok] for o in ours) and all(t[tk] == theirs[0][tk] for t in theirs)
        rows.append([label, f"{a:.6g}", f"{b:.6g}", f"{rel:.1e}", "yes" if same else "no"])
    return show_table("same numbers?", ["metric", "fid_is.py", "torch-fidelity", "relative difference",
                                        "identical over repeats"], rows)


def main(workdir: str = None, repeat: int = 2, batch: int = 64, kid_subset_size: int = 1000,
         seed: int = 2020, out: str = None):
    """Time both tools ``repeat`` times, interleaved (ours, theirs, ours, theirs, ...), and write the "fid-speed"
    section of docs/benchmarks.md.

    Args:
        workdir: bench/experiments/gan_quality.py's work folder: seed.h5 ("real") and improved.h5 ("generated");
            default: the benchmarks' work folder "quality" (see common.work_dir).
        repeat: runs of each tool.
        batch: images per network call, both tools.
        kid_subset_size: KID subset size, both tools.
        seed: seed of the KID subsets and IS shuffle, both tools.
        out: markdown file to update (default docs/benchmarks.md; "" writes nothing).
    """
    record_start()
    work = work_dir(workdir, "quality")
    real, fake = f"{work / 'seed.h5'}:synthetic", f"{work / 'improved.h5'}:synthetic"
    for ref in (real, fake):
        if not Path(ref.rsplit(":", 1)[0]).is_file():
            sys.exit(f"{ref.rsplit(':', 1)[0]} missing: run `python bench/experiments/gan_quality.py --workdir {work}` "
                     "first")
    runs, ours, theirs = run_both(real, fake, repeat, batch, kid_subset_size, seed)
    cfg = ours[0]["config"]
    if cfg["cache"] != "" or cfg["audit"] or cfg["per_class"]:  # the flags must have meant what the text says
        sys.exit(f"fid_is.py ran with cache={cfg['cache']!r}, audit={cfg['audit']}, per_class={cfg['per_class']}")
    n = ours[0]["n_real"] + ours[0]["n_fake"]
    rows = [[k + 1, f"{o:.1f}", f"{n / o:.1f}", f"{100 * ol:.0f}%", f"{t:.1f}", f"{n / t:.1f}", f"{100 * tl:.0f}%",
             f"{o / t:.2f}x"] for k, (o, ol, t, tl) in enumerate(runs)]
    ratios = [o / t for o, _, t, _ in runs]
    med_o, med_t = statistics.median(r[0] for r in runs), statistics.median(r[2] for r in runs)
    rows.append(["median", f"{med_o:.1f}", f"{n / med_o:.1f}", "", f"{med_t:.1f}", f"{n / med_t:.1f}", "",
                 f"{statistics.median(ratios):.2f}x"])
    table = show_table("fid_is.py vs torch-fidelity", ["run", "fid_is.py s", "img/s", "other load",
                                                        "torch-fidelity s", "img/s", "other load",
                                                        "ratio ours/theirs"], rows)
    agree = agreement(ours, theirs)
    console.print(f"FID: fid_is.py {ours[0]['fid']:.6f}, torch-fidelity {theirs[0]['frechet_inception_distance']:.6f}")
    m = min(ours[0]["n_real"], ours[0]["n_fake"])
    whole_sets = (f"""
With {m:,} images per side and a KID subset size of {kid_subset_size:,}, every KID subset holds whole sets (in a
different order), so the KID std is 0 in exact arithmetic: what each tool reports there is its rounding noise
(fid_is.py's kernels in float64, torch-fidelity's in float32), and their relative difference means nothing.
""" if m <= kid_subset_size else "")
    body = f"""Wall time of one complete metric computation, IS + FID + KID + precision/recall, on the same
{n:,} images at 64x64 ("real": {ours[0]['n_real']:,} images of `{real}`; "generated": {ours[0]['n_fake']:,} of
`{fake}`; both generated by the two GAN recipes: only speed matters here, the values mean nothing), both on the
CPU with the same Inception network (FID Inception-v3, the same random weights file for both:
`cxrgan.metrics.inception.random_weights(seed=0)`, Kaiming-normal init as in tests/test_evaluate.py, so no download and
non-degenerate features). Each run is a fresh process timed
from start to exit, so start-up (imports, loading the weights) counts for both. fid_is.py:
`tools/fid_is.py --inception-weights W --noaudit --noper-class --cache "" --batch {batch} --kid-subset-size
{kid_subset_size} --seed {seed} --device cpu` (no feature cache, no audit, overall metrics only: the same work as
torch-fidelity). torch-fidelity {version('torch-fidelity')}: `calculate_metrics(isc, fid, kid, prc,
feature_extractor="inception-v3-compat", feature_extractor_weights_path=W, feature_layer_prc="2048",
batch_size={batch}, kid_subset_size={kid_subset_size}, rng_seed={seed}, cuda=False, cache=False)`, otherwise its
defaults (so its DataLoader uses worker processes), the images given as uint8 3-channel tensors (gray replicated)
through a torch Dataset. Both extract the 2,048-d pool features and the logits in one pass per image set, at the
torch default of {torch.get_num_threads()} threads. Runs interleaved (fid_is.py, torch-fidelity, fid_is.py, ...),
after one untimed import of both packages to warm the file cache; img/s = {n:,} images / wall time; "other
load": the share of the CPUs busy with work other than that run (other processes on the shared machine).

{table}

Median ratio fid_is.py / torch-fidelity: **{statistics.median(ratios):.2f}x** (target ≤ 1.0x; below 1 means
fid_is.py is faster). Same numbers (first run of each; fid_is.py's keys against torch-fidelity's; identical over
repeats: every run of the same tool gave exactly the same value):

{agree}
{whole_sets}"""
    write_section("fid-speed", "Image-set metrics: fid_is.py vs torch-fidelity (CPU)", body, out)


if __name__ == "__main__":
    fire.Fire(main)
