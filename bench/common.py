"""The one helper module of the benchmark scripts (bench/speed/*.py and bench/experiments/*.py): source images,
work folders, timing, tables, the machine, docs/benchmarks.md, and what several experiments share (the NIH 64x64
splits, training for a wall-clock budget, continued runs, reference scores, table cells, SWD).

Every script puts bench/ on sys.path once, before its other imports, and imports this module as ``common``; scripts
never import each other. The library is imported inside the helpers that need it, so that a script's start (and
``--help``) costs only what that script itself imports.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
FULLRES = ROOT.parent / "shared" / "data" / "nih-fullres"  # 18 real 1024x1024 8-bit NIH radiographs
NIH64 = ROOT.parent / "shared" / "data" / "nih64"  # real NIH "No Finding" and "Infiltration" images at 64x64
NIH64_EXTRA = ROOT.parent / "shared" / "data" / "nih64-extra"  # 1,261 more, other patients: the external test set
WORK_ENV = "CXRGAN_BENCH_DIR"  # where the experiments' work folders go (default: build/bench in the repository)
console = Console()

_HEADER = """# Benchmarks

Speed, size and quality measurements, written by the scripts in `bench/` (`make bench` runs the speed ones in
`bench/speed/`; the quality and usefulness studies in `bench/experiments/` take longer and are run by hand, e.g.
`python bench/experiments/improved_lr.py`, `python bench/experiments/gan_quality.py`). The experiments keep their
work folders under `$CXRGAN_BENCH_DIR` (default `build/bench`) unless `--workdir` names one.
Each section is replaced when its script runs again; the command, machine and date under each table say
where its numbers come from. Rates are images per second from the best (shortest) of repeated runs: the
machine these were measured on is small and shared, and the best run is the one least disturbed by other work
(how much other work shared the CPUs during each script is recorded with its results).
"""


def bench_dir() -> Path:
    """The folder the benchmarks' work folders live in: $CXRGAN_BENCH_DIR, else build/bench in the repository."""
    return Path(os.environ.get(WORK_ENV) or ROOT / "build" / "bench")


def work_dir(workdir: str | Path | None, name: str) -> Path:
    """``workdir`` when given, else the work folder ``name`` under bench_dir() (shared by the scripts that use it)."""
    return Path(workdir) if workdir else bench_dir() / name


def log(msg: str) -> None:
    console.print(f"[{time.strftime('%H:%M:%S')}] {msg}")


def as_list(value, kind=int) -> list:
    """A comma-separated option (``--seeds 0,1``: python-fire passes a tuple; ``--seeds 0``: one value) as a list."""
    return [kind(v) for v in (value if isinstance(value, (tuple, list)) else str(value).split(","))]


def fullres_pngs(src: str | Path | None = None) -> list[Path]:
    """The real full-resolution radiographs the benchmarks are run on."""
    src = Path(src) if src else FULLRES
    files = sorted(src.glob("*.png"))
    if not files:
        sys.exit(f"no PNGs in {src}: pass --src DIR with real radiographs (e.g. ../shared/data/nih-fullres)")
    return files


def best_time(fn, repeat: int) -> float:
    """Shortest wall time in seconds of ``repeat`` calls of ``fn()``."""
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def show_table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print the rows as a rich table; return them as a markdown table."""
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


ARMS_COMPARED = ("real", "real+oversampling", "real+augmentation")  # the arms a synthetic arm's Δ columns are against


def arm_cells(summary: dict, p_values: bool = False, missing: str = "–") -> list[str]:
    """One classifier arm's ``metrics.json`` (train_resnet's seed summary) as table cells: test AUROC with its
    seed-aware interval, then its paired ΔAUROC against each of ARMS_COMPARED (``missing`` where not compared)."""
    lo, hi = summary["auroc_ci95"]
    comps = {Path(c["baseline"]).name: c for c in summary.get("comparisons", [])}
    cells = [f"{summary['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"]
    for arm in ARMS_COMPARED:
        c = comps.get(arm)
        cells.append(missing if c is None else f"{c['delta_auroc']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
                     + (f" p {c['p_value']:.2g}" if p_values else ""))
    return cells


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, of this process and its waited-for children) so far (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    machine_busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    t = os.times()
    return machine_busy, t.user + t.system + t.children_user + t.children_system


_start: tuple[float, float, float] | None = None


def record_start() -> None:
    """Call first in a script's main, so the results can say how much other work shared the CPUs.
    (Not at import: spawned worker processes import the script too.)"""
    global _start
    _start = (time.monotonic(), *cpu_seconds())


def other_load() -> str:
    """The share of all CPUs busy with work other than this script since ``record_start``."""
    if _start is None or not Path("/proc/stat").exists():
        return "not measured"
    wall, machine_busy, own = time.monotonic() - _start[0], *cpu_seconds()
    other = (machine_busy - _start[1]) - (own - _start[2])
    return f"{max(0.0, 100 * other / (wall * os.cpu_count())):.0f}% of the CPUs"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libs = ", ".join(f"{name} {version(dist)}" for name, dist in
                     (("torch", "torch"), ("h5py", "h5py"), ("pillow", "pillow"), ("numpy", "numpy")))
    return (f"{cpu_model()}, {cores} cores usable ({os.cpu_count()} online); Python {platform.python_version()}, "
            f"{libs}; other work on the machine during the run: {other_load()}")


def command() -> str:
    """This script's command line, as run from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_section(key: str, title: str, body: str, out: str | Path | None = None) -> None:
    """Replace (or append) the ``key`` section of ``out`` (default docs/benchmarks.md) between marker comments;
    ``out=""`` writes nothing."""
    if out == "":
        return
    out = Path(out) if out else DOC
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    section = (f"<!-- bench:{key} -->\n## {title}\n\n{body.strip()}\n\n"
               f"- Command: `{command()}`\n- Machine: {machine()}\n- Date: {date}\n<!-- /bench:{key} -->")
    text = out.read_text() if out.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"updated the '{title}' section of {out}")


# ---- shared by the experiments (bench/experiments) ----

METRICS = ("kid_mean", "precision", "recall", "pixel_diversity")  # fid_is's per-class metrics the GAN tables show


def nih64_splits(work: Path, src: str | Path = NIH64, seed: int = 0) -> tuple[Path, dict]:
    """Build (once) the unbalanced 64x64 dataset in ``work``; return its path and its splits held in memory."""
    from cxrgan.data.ingest import IngestConfig, build_dataset
    from cxrgan.data.reader import H5ImageDataset

    work.mkdir(parents=True, exist_ok=True)
    data = work / "nih64.h5"
    if not data.exists():
        build_dataset(IngestConfig(src=str(src), out=str(data), size=64, balance=False, workers=2, seed=seed))
    return data, {s: H5ImageDataset(data, s, in_memory=True) for s in ("train", "val", "test")}


def nih_mini_and_external(work: Path) -> tuple[Path, Path]:
    """Build (once) in ``work``: the shipped nih-mini at 64x64 (its own patient split) and the external test file,
    nih64-extra's No Finding and Infiltration radiographs with every image in the test split."""
    from cxrgan.data.ingest import IngestConfig, build_dataset

    work.mkdir(parents=True, exist_ok=True)
    data, extra = work / "nih-mini-64.h5", work / "external-test-64.h5"
    for src, out, fractions in ((ROOT / "data" / "nih-mini", data, "0.7,0.1,0.2"), (NIH64_EXTRA, extra, "0,0,1")):
        if not out.exists():
            build_dataset(IngestConfig(src=str(src), out=str(out), size=64, balance=False, fractions=fractions,
                                       workers=1, seed=0))
    return data, extra


SPACES = ("classifier", "cxr")  # the image metrics' feature spaces of the nih-mini experiments (study, cpu_budget)


def feature_network(work: Path, space: str) -> Path:
    """Where build_feature_network keeps the network of ``space`` in ``work``."""
    return work / "features" / ("real-classifier/model-seed0.pt" if space == "classifier" else "cxr.pt")


def build_feature_network(work: Path, space: str) -> Path:
    """Train (once per work folder) the network of one of SPACES, as docs/benchmarks.md's "cxr feature space"
    section trained them: the real-data ResNet-18 of nih-mini (seed 0, 15 epochs), or `make features` with
    FEATURES_EXTRA=nih64-extra (the cxr network; 20 epochs, seed 0)."""
    from cxrgan.classify.train import ClassifierConfig, run
    from cxrgan.data.ingest import IngestConfig, build_dataset
    from cxrgan.metrics.cxr_train import FeaturesConfig, run as train_features

    data, _ = nih_mini_and_external(work)
    out = feature_network(work, space)
    if out.is_file():
        return out
    if space == "classifier":
        run(ClassifierConfig(data=str(data), out=str(out.parent), size=64, epochs=15, device="cpu", overwrite=True))
        return out
    others = work / "features-extra-64.h5"
    if not others.is_file():
        build_dataset(IngestConfig(src=str(NIH64_EXTRA), out=str(others), size=64, other_findings=True,
                                   fractions="1,0,0", balance=False, workers=1, seed=0))
    train_features(FeaturesConfig(data=f"{data}:train,{others}:train", out=str(out), epochs=20, seed=0,
                                  device="cpu", overwrite=True))
    return out


def real_classifier(work: Path) -> Path:
    """The real-data ResNet-18 (seed 0) whose penultimate layer is the GAN experiments' feature space."""
    return work / "eval" / "real" / "model-seed0.pt"


def train_for(cfg: dict, minutes: float, chunk: int = 5, ledger: Path | None = None) -> dict:
    """Train (resuming) for ``minutes`` more of training time. The first ``chunk`` epochs measure the time per
    epoch; every later call is sized to end at the budget, so the run stops within about half an epoch of it. With
    a ``ledger`` (a json file) the budget is the run's total: the training time of earlier, interrupted calls is
    read from it and each finished chunk is added to it (a chunk killed midway is not counted)."""
    from cxrgan.generative.train import GanConfig, train

    done_before = json.loads(Path(ledger).read_text()) if ledger and Path(ledger).is_file() else {}
    budget, seconds, epochs, result = minutes * 60, float(done_before.get("seconds", 0.0)), 0, {}
    epochs = int(done_before.get("epochs", 0))
    while seconds < budget:
        result = train(GanConfig(epochs=epochs + chunk, **cfg))
        done = result.get("epochs", epochs + chunk)
        if done > epochs and result.get("seconds", 0.0) > 0:  # (a resumed run may already be past epochs + chunk)
            seconds += result["seconds"]
            if ledger:
                Path(ledger).write_text(json.dumps({"seconds": seconds, "epochs": done}))
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
    from cxrgan.metrics.evaluate import QualityConfig, evaluate

    return evaluate(QualityConfig(overwrite=True, real=f"{data}:test", fake=f"{data}:train", features=features,
                                  out=str(workdir / "real-train-vs-test.json"), cache="", audit=False, seed=0,
                                  device="cpu"))


def reference_rows(data: Path, features: str, work: Path, classes, before: int, after: int) -> list[list[str]]:
    """real_reference as one table row per class: the label, ``before`` empty cells, METRICS, ``after`` more."""
    ref = real_reference(data, features, work)["per_class"]
    return [[f"real training images ({ref[c]['n_fake']}), the reference", c, *["–"] * before,
             *(f"{ref[c][k]:.3f}" if ref[c][k] is not None else "–" for k in METRICS), *["–"] * after]
            for c in classes]


def metric_cells(runs: list[dict], cls: str) -> list[str]:
    """METRICS of class ``cls`` over the runs' scores.json records: mean ± sd over seeds (or the one value)."""
    cells = []
    for key in METRICS:
        v = np.array([r["per_class"][cls][key] for r in runs if r["per_class"][cls][key] is not None], float)
        cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}" if len(v) else "–")
    return cells


# ---- sliced Wasserstein distance (the GAN experiments' quality signal without a pretrained network) ----
# Between image sets on a Laplacian pyramid (Karras et al. 2018, ProGAN, sec. 5): 7x7 patches are drawn from every
# level of each image's Laplacian pyramid, normalised per channel, and the Wasserstein-1 distance between the two
# patch sets is averaged over random 1-D projections. Lower is better; each level compares one scale (fine to coarse).

def _blur(x: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    gauss = torch.tensor([1, 4, 6, 4, 1], dtype=torch.float64)
    kernel = (gauss[:, None] * gauss[None, :] / 256)[None, None].to(x)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(n, 1, H, W) -> [band-pass at H, at H/2, ..., low-pass at H / 2^(levels-1)]."""
    import torch

    out = []
    for _ in range(levels - 1):
        down = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = down * 4
        out.append(x - _blur(up))
        x = down
    out.append(x)
    return out


def _patches(level: torch.Tensor, per_image: int, size: int, gen: torch.Generator) -> torch.Tensor:
    import torch

    n, _, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=gen)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=gen)
    offs = torch.arange(size)
    rows = (ys[..., None] + offs)[..., :, None].expand(-1, -1, size, size)
    cols = (xs[..., None] + offs)[..., None, :].expand(-1, -1, size, size)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    return level[:, 0][batch, rows, cols].reshape(-1, size * size)


def _sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, gen: torch.Generator) -> float:
    import torch

    n = min(len(a), len(b))
    a, b = a[torch.randperm(len(a), generator=gen)[:n]], b[torch.randperm(len(b), generator=gen)[:n]]
    dirs = torch.randn(a.shape[1], projections, generator=gen, dtype=a.dtype)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return float((pa - pb).abs().mean())


def swd(real: np.ndarray, fake: np.ndarray, levels: int | None = None, patches_per_image: int = 64,
        patch: int = 7, projections: int = 512, repeats: int = 4, seed: int = 0) -> dict:
    """SWD per pyramid level (x1e3, as ProGAN reports) and their mean, between two uint8 (n, H, W) image sets."""
    import torch

    h = real.shape[-1]
    levels = levels or max(1, int(np.log2(h // 16)) + 1)  # down to 16x16
    gen = torch.Generator().manual_seed(seed)
    pyr = [laplacian_pyramid(torch.from_numpy(np.asarray(s, dtype=np.float32))[:, None] / 127.5 - 1, levels)
           for s in (real, fake)]
    result = {}
    for k in range(levels):
        dists = []
        for _ in range(repeats):
            pa = _patches(pyr[0][k], patches_per_image, patch, gen).double()
            pb = _patches(pyr[1][k], patches_per_image, patch, gen).double()
            mean, std = pa.mean(0, keepdim=True), pa.std(0, keepdim=True) + 1e-8  # normalise by the real set
            dists.append(_sliced_wasserstein((pa - mean) / std, (pb - mean) / std, projections, gen))
        result[f"swd_{h >> k}"] = float(np.mean(dists)) * 1e3
    result["swd_mean"] = float(np.mean([v for k, v in result.items()]))
    return result
