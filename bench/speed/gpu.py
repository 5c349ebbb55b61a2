"""GPU readiness in one command: the training, sampling and metric throughput of each part of the pipeline on one
CUDA device, with peak GPU memory, written as the "GPU readiness" section of docs/benchmarks.md.

Every measurement runs the library's own pieces (train_dcgan's networks and training step, train_resnet's network,
augmentation and optimiser, sample.py's generation, fid_is's Inception features) on phantom images
(``cxrgan.data.phantoms``), untrained weights: throughput does not depend on them. Each is a few untimed warm-up
steps (cuDNN's algorithm search, torch.compile's compilation) and then a timed window; a measurement that fails is
recorded as a "failed" row and the others still run. On the CPU (``--device cpu``, or when no GPU is visible) the
same script runs tiny (small images and networks, a fraction of a second each), as its test does.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fire
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import DOC, ROOT, console, record_start, show_table, write_section  # noqa: E402
from cxrgan import runtime
from cxrgan.classify import model as classifier
from cxrgan.classify.train import ClassifierConfig
from cxrgan.data.datasetfile import DEFAULT_CLASSES
from cxrgan.data.phantoms import generate as make_phantoms
from cxrgan.data.reader import H5ImageDataset, to_model_input
from cxrgan.generative import networks
from cxrgan.generative.networks import generate, model_description
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.recipes import DEFAULT_RECIPE, RECIPES
from cxrgan.generative.sample import STEPS, SampleConfig
from cxrgan.generative.train import GanConfig, build_networks, load_training_images
from cxrgan.metrics.evaluate import QualityConfig
from cxrgan.metrics.features import feature_net
from cxrgan.metrics.inception import random_weights

CUDA_ONLY = "CUDA only"


@dataclass
class SwitchableRuntime(runtime.Runtime):
    """The library's Runtime with its two CUDA defaults, bf16 autocast and the channels-last layout, each switchable
    off: only this benchmark's fp32 and contiguous-layout rows use that. With both on it is the library's Runtime."""

    bf16: bool = True
    channels_last: bool = True

    def autocast(self):
        return super().autocast() if self.bf16 else nullcontext()

    def layout(self, x):
        return super().layout(x) if self.channels_last else x


@dataclass(frozen=True)
class Plan:
    """What every measurement runs at: full sizes on a GPU, tiny ones on the CPU."""

    device: torch.device
    seconds: float  # timed window of each measurement
    warmup: int  # untimed steps before it
    size: int  # GAN (and large diffusion) image size
    small: int  # the small diffusion size
    resnet_size: int  # the classifier's input size
    batch: int | None  # training batch; None: each tool's default
    sample_batch: int  # images per generator call when sampling
    fid_batch: int  # images per Inception call
    base: int | None  # base filters of the GANs and U-Net; None: each recipe's
    data: dict  # image size -> phantom dataset file
    work: Path  # scratch folder


@dataclass(frozen=True)
class Row:
    name: str
    measure: Callable[[], float]  # runs the measurement, returns images per second
    cuda_only: bool = False  # shown as "CUDA only" (not run) on the CPU


# ----------------------------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[], int], plan: Plan, warmup: int | None = None) -> float:
    """Images per second of repeated ``step()`` calls (each returns how many images it processed) over a window of
    ``plan.seconds`` (at least one call), after ``warmup`` (default ``plan.warmup``) untimed calls."""
    for _ in range(plan.warmup if warmup is None else warmup):
        step()
    sync(plan.device)
    images, t0 = 0, time.perf_counter()
    while images == 0 or time.perf_counter() - t0 < plan.seconds:
        images += step()
    sync(plan.device)
    return images / (time.perf_counter() - t0)


def one_line(e: Exception) -> str:
    """An exception as one short line that fits a markdown table cell."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}".replace("|", "/")


def run_row(row: Row, plan: Plan) -> dict:
    """One measurement as a record: name, img_per_s, peak_mem_mb (CUDA), status ("ok", "CUDA only", "failed: ...")."""
    cuda = plan.device.type == "cuda"
    if row.cuda_only and not cuda:
        return {"name": row.name, "img_per_s": None, "peak_mem_mb": None, "status": CUDA_ONLY}
    if cuda:  # peak memory of this measurement alone
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(plan.device)
    try:
        img_per_s, status = row.measure(), "ok"
    except Exception as e:  # noqa: BLE001 - any failure becomes this row's status; the other rows still run
        img_per_s, status = None, f"failed: {one_line(e)}"
    finally:
        torch.compiler.reset()  # drop compiled graphs, so one row's compilation does not leak into the next
    peak = torch.cuda.max_memory_allocated(plan.device) / 2**20 if cuda else None
    return {"name": row.name, "img_per_s": img_per_s, "peak_mem_mb": peak, "status": status}


# ----------------------------------------------------------------------------------------------------------------
# The measurements


def gan_config(plan: Plan, recipe: str, size: int, compile: bool = False) -> GanConfig:
    return GanConfig(data=str(plan.data[size]), out=str(plan.work / "gan"), recipe=recipe,
                     batch=plan.batch or GanConfig.batch, device=str(plan.device), base=plan.base,
                     compile=compile).resolved()


def gan_model(cfg: GanConfig, size: int) -> dict:
    """The networks train_dcgan builds for ``cfg`` at ``size`` (a diffusion model's latent: one value per pixel)."""
    recipe = RECIPES[cfg.recipe]
    objective = OBJECTIVES[recipe.objective]
    return model_description(recipe.networks, size, objective.latent(cfg, size), cfg.base, cfg.channels,
                             list(DEFAULT_CLASSES), cfg.cls, **objective.model_extras(recipe.settings))


def gan_training(plan: Plan, recipe: str, size: int, bf16: bool = True, channels_last: bool = True,
                 compile: bool = False) -> float:
    """train_dcgan's step for ``recipe`` (its networks, optimisers, augmentation and loss) on random batches of the
    training images held on the device, as train_dcgan holds them; without its checkpoints and grids."""
    cfg = gan_config(plan, recipe, size, compile)
    rt = SwitchableRuntime(plan.device, bf16=bf16, channels_last=channels_last)
    data = load_training_images(cfg)
    recipe, model = RECIPES[cfg.recipe], gan_model(cfg, size)
    objective = OBJECTIVES[recipe.objective]
    cfg.latent = model["latent"]
    nets = build_networks(cfg, model, objective, rt)
    trained = {part: torch.compile(m) for part, m in nets.modules.items()} if compile else dict(nets.modules)
    step = objective.step(cfg, rt, nets.modules, trained, nets.optimizers, cfg.batch, None, model, recipe.settings)
    images, labels = data.images.to(rt.device), data.labels.to(rt.device)
    order, steps = torch.Generator().manual_seed(0), [0]

    def one_step() -> int:
        idx = torch.randint(len(images), (cfg.batch,), generator=order).to(rt.device)
        x = to_model_input(images[idx])
        x = rt.layout(x.expand(-1, 3, -1, -1) if cfg.channels == 3 else x)
        step(x, labels[idx], steps[0])  # returns the losses as floats: waits for the GPU
        steps[0] += 1
        return cfg.batch

    return rate(one_step, plan)


def classifier_training(plan: Plan) -> float:
    """train_resnet's training step (ResNet-18, its augmentation, resize to --size, AdamW, cross-entropy; float32,
    as train_resnet runs) on batches of the GAN-size phantoms."""
    cfg = ClassifierConfig(data=str(plan.data[plan.size]), size=plan.resnet_size,
                           batch=plan.batch or ClassifierConfig.batch)
    ds = H5ImageDataset(cfg.data, "train", in_memory=True)
    images, labels = torch.from_numpy(ds.images), torch.from_numpy(ds.labels)
    torch.manual_seed(0)
    model = classifier.build(len(ds.classes)).to(plan.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)

    def one_step() -> int:
        b = torch.randint(len(images), (cfg.batch,), generator=gen)
        x = classifier.augment(to_model_input(images[b].to(plan.device)), gen)
        loss = F.cross_entropy(model(classifier.resize(x, cfg.size)), labels[b].to(plan.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # train_resnet records every step's loss
        return cfg.batch

    return rate(one_step, plan)


def sampling(plan: Plan, recipe: str, size: int) -> float:
    """sample.py's generation (its default batch, steps and guidance; the generator as load_generator leaves it)
    into uint8 images on the host, without writing the HDF5 file."""
    cfg, defaults = gan_config(plan, recipe, size), SampleConfig()
    model = gan_model(cfg, size)
    objective = OBJECTIVES[RECIPES[cfg.recipe].objective]
    torch.manual_seed(0)
    network = networks.build(model)[objective.sampled].to(plan.device).eval()
    sampler = objective.sampler(network, model, STEPS, 1.0, defaults.solver,
                                channels_last=plan.device.type == "cpu")
    z = torch.randn(plan.sample_batch, model["latent"])
    y = torch.arange(plan.sample_batch) % model["n_classes"]
    # one untimed batch: a diffusion batch is already 2 * steps - 1 network calls
    return rate(lambda: len(generate(network, sampler, z, y, plan.device, plan.sample_batch)), plan, warmup=1)


def inception_features(plan: Plan) -> float:
    """fid_is's feature extraction (FID Inception-v3, random weights: no download) of the GAN-size phantoms."""
    weights = plan.work / "inception-random.pth"
    torch.save(random_weights(seed=0), weights)
    net = feature_net("inception", str(weights), str(plan.device))
    ds = H5ImageDataset(plan.data[plan.size], "train", in_memory=True)
    images = np.resize(ds.images, (plan.fid_batch, *ds.images.shape[1:]))  # the images repeated to one batch
    return rate(lambda: len(net(images)[0]), plan, warmup=1)


def rows(plan: Plan) -> list[Row]:
    """Every measurement, in order (add a row here to measure something more)."""
    s, r = plan.size, plan.resnet_size
    gan = functools.partial(gan_training, plan, "limited", s)
    diffusion_sizes = sorted({plan.small, s})
    return [
        Row(f"limited GAN training {s}x{s}, fp32", functools.partial(gan, bf16=False, channels_last=False)),
        Row(f"limited GAN training {s}x{s}, bf16", functools.partial(gan, channels_last=False), cuda_only=True),
        Row(f"limited GAN training {s}x{s}, bf16 + channels-last", gan, cuda_only=True),
        Row(f"limited GAN training {s}x{s}, bf16 + channels-last + compile", functools.partial(gan, compile=True),
            cuda_only=True),
        *[Row(f"diffusion training {d}x{d}", functools.partial(gan_training, plan, "diffusion", d))
          for d in diffusion_sizes],
        Row(f"ResNet-18 training {r}x{r}", functools.partial(classifier_training, plan)),
        Row(f"limited GAN sampling {s}x{s}", functools.partial(sampling, plan, "limited", s)),
        *[Row(f"diffusion sampling {d}x{d}", functools.partial(sampling, plan, "diffusion", d))
          for d in diffusion_sizes],
        Row(f"fid_is Inception features, {s}x{s} images", functools.partial(inception_features, plan)),
    ]


def make_all_nih(plan: Plan, gan_seconds: float, gan_img_per_s: float | None, patients: int, small_run: dict) -> dict:
    """`make all DATA=nih` to REPORT.md on a NIH-shaped release (tests/nih_release.py: 1024x1024 phantom PNGs in the
    12 archives, the csv and the official lists, written into NIH_DIR as `make download` leaves it) at
    ``plan.size``, with the GAN trained for about ``gan_seconds`` (KIMG from the measured training rate) and
    ResNet-18 at ``plan.resnet_size``, random
    Inception weights, and the classifier and sampling sizes of ``small_run`` (make variables). Returns a result
    record whose status holds the wall time and what the report says."""
    work = plan.work / "nih"
    name = f"make all DATA=nih, NIH-shaped release, {plan.size}x{plan.size}, GAN ~{gan_seconds:g} s"
    py = sys.executable
    rate = gan_img_per_s or 50.0  # no measured rate (e.g. its row failed): a guess, so the run still happens
    kimg = max(0.05, round(rate * gan_seconds / 1000, 2))
    steps = [[py, "tests/nih_release.py", "write", work / "nih", "--patients", patients],
             [py, "tests/nih_release.py", "weights", work / "weights"],
             ["make", "--no-print-directory", "all", "DATA=nih", f"NIH_DIR={work / 'nih'}", f"DATA_DIR={work / 'data'}",
              f"OUTPUTS={work / 'outputs'}", f"SIZE={plan.size}", f"CLF_SIZE={plan.resnet_size}", f"KIMG={kimg}",
              *[f"{k}={v}" for k, v in small_run.items()], f"DEVICE={plan.device}",
              f"INCEPTION_WEIGHTS={work / 'weights' / 'inception-random.pt'}",
              f"GAN_ARGS=--ckpt-every 1000{'' if plan.base is None else f' --base {plan.base}'}"
              f"{'' if plan.batch is None else f' --batch {plan.batch}'}"]]
    t0 = time.perf_counter()
    log = plan.work / "make-all-nih.log"
    with open(log, "w") as f:
        for cmd in steps:
            r = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
            if r.returncode != 0:
                tail = " ".join(log.read_text().split()[-30:])
                return {"name": name, "img_per_s": None, "peak_mem_mb": None,
                        "status": f"failed: {Path(str(cmd[1])).name} exited {r.returncode}: ...{tail[-300:]}"}
    seconds = time.perf_counter() - t0
    try:  # make succeeded; what it wrote says how the run went
        report = (work / "outputs" / "REPORT.md").read_text()
        summary = json.loads((work / "outputs" / "gan" / DEFAULT_RECIPE / "summary.json").read_text())
        gan = f"GAN {summary['kimg']:.1f} kimg in {summary.get('seconds', float('nan')):.0f} s"
    except (OSError, KeyError, ValueError) as e:
        return {"name": name, "img_per_s": None, "peak_mem_mb": None, "status": f"failed: {one_line(e)}"}
    return {"name": name, "img_per_s": summary.get("img_per_s"), "peak_mem_mb": None,
            "status": f"ok: REPORT.md in {seconds:.0f} s ({gan}; official split: {'official lists' in report})"}


# ----------------------------------------------------------------------------------------------------------------
# The command


def phantom_sets(work: Path, sizes: set[int], n: int) -> dict:
    """A phantom dataset (all in its train split) per image size."""
    paths = {}
    for size in sorted(sizes):
        paths[size] = work / f"phantoms-{size}.h5"
        make_phantoms(paths[size], n=n, size=size, seed=0, fractions=(1, 0, 0))
    return paths


def cells(result: dict) -> list[str]:
    speed, mem = result["img_per_s"], result["peak_mem_mb"]
    return [result["name"], "–" if speed is None else f"{speed:,.1f}", "–" if mem is None else f"{mem:,.0f}",
            result["status"]]


def describe(plan: Plan, total_s: float) -> str:
    where = (torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda"
             else f"the CPU ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})")
    batch = plan.batch or f"{GanConfig.batch} (the tools' default)"
    steps = STEPS
    return f"""Throughput of each stage of the pipeline on {where}: untrained networks on phantom images
(`cxrgan.data.phantoms`), as throughput does not depend on the weights. Each row: an untimed warm-up (training:
{plan.warmup} step(s); sampling and features: one batch) for cuDNN's algorithm search and torch.compile's
compilation, then at least {plan.seconds:g} s timed; img/s = images processed / time, the GPU synchronised at both
ends. Peak memory: `torch.cuda.max_memory_allocated` during the row (weights, optimiser state, activations), reset
before each row.

- GAN and diffusion training: train_dcgan's networks and step (`build_networks`, the objective's step: for
  `limited` a D step, a G step, the EMA, ADA and LeCam), batch {batch}, base filters {plan.base or "the recipe's"},
  on random batches of the training images held on the device; no checkpoints or grids. On CUDA train_dcgan always
  runs bf16 autocast and channels-last (`cxrgan.runtime`), so the diffusion rows do too; the limited GAN's fp32 and
  bf16 rows switch one or both off in this benchmark only (fp32: cuDNN may still use TF32 convolutions, torch's
  default). "compile": train_dcgan `--compile` (G and D compiled as it compiles them).
- ResNet-18: train_resnet's step (augmentation, resize of the {plan.size}-pixel images to {plan.resnet_size}, AdamW,
  cross-entropy), batch {batch}, float32 as train_resnet runs.
- Sampling: sample.py's generation into uint8 images on the host, batch {plan.sample_batch}, the generator in float32
  as `load_generator` leaves it, without the HDF5 write; diffusion with sample.py's defaults ({steps} Heun steps =
  {2 * steps - 1} network calls per image, guidance 1).
- fid_is features: FID Inception-v3 (random weights: `cxrgan.metrics.inception.random_weights`) through
  `feature_net`, {plan.fid_batch} images per call (resized to 299x299 inside), features and logits back on the host.

- make all DATA=nih (with --make-all): the whole chain on a NIH-shaped release (tests/nih_release.py), the
  GAN's KIMG set from the measured training rate to last about the time named; img/s is the GAN's own from its
  summary.json, and the status gives the wall time of the whole run (dataset, classifiers in three arms, sampling,
  metrics, report).

All rows, with making the phantom datasets, took {total_s:.0f} s (plus the imports)."""


def write_records(path: str, results: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n")


# Defaults per mode: on a GPU, the real sizes and each tool's own batch and networks; tiny, for the CPU and tests.
# make_all: the make variables of the last step's run besides its sizes (tiny: only that the chain works, quickly;
# `make nih-smoke` runs the same path further).
FULL = {"seconds": 10.0, "warmup": 3, "size": 256, "small": 64, "resnet_size": 224, "batch": None, "base": None,
        "gan_seconds": 120, "patients": 120, "out": DOC,
        "make_all": {"CLF_EPOCHS": 2, "SEEDS": 2, "N_SYNTH": 64}}
TINY = {"seconds": 0.2, "warmup": 1, "size": 32, "small": 32, "resnet_size": 32, "batch": 4, "base": 8,
        "gan_seconds": 1, "patients": 24, "out": ROOT / "build" / "gpu-check.md",
        "make_all": {"CLF_EPOCHS": 1, "SEEDS": 2, "N_SYNTH": 8}}


def main(device: str = "auto", tiny: bool | None = None, seconds: float | None = None, warmup: int | None = None,
         size: int | None = None, small: int | None = None, resnet_size: int | None = None, batch: int | None = None,
         base: int | None = None, make_all: bool = True, gan_seconds: float | None = None, patients: int | None = None,
         out: str | None = None, json: str | None = None):
    """Measure every row and write the "GPU readiness" section of docs/benchmarks.md.

    Args:
        device: auto (cuda when visible, else the CPU), cuda, cuda:N or cpu.
        tiny: small sizes, networks and windows (default: on when the device is the CPU).
        seconds: timed window per measurement (default 10; tiny 0.2).
        warmup: untimed steps before each window (default 3; tiny 1).
        size: GAN (and large diffusion) image size, and the ResNet and Inception source images (default 256; tiny 32).
        small: small diffusion image size (default 64; tiny 32).
        resnet_size: classifier input size (default 224; tiny 32).
        batch: training batch of every trainer (default: the tools' own, 32; tiny 4); when given, also the sampling
            and Inception batch (default: sample.py's 256 and fid_is's 64).
        base: base filter count of the GAN and U-Net (default: each recipe's; tiny 8).
        make_all: last, `make all DATA=nih` on a NIH-shaped release at --size (--nomake-all: not).
        gan_seconds: that run's GAN training time, turned into KIMG by the measured rate (default 120; tiny 1).
        patients: that release's patients, 1-4 images each (default 120; tiny 24).
        out: markdown file to update (default docs/benchmarks.md on a GPU, build/gpu-check.md tiny; "" writes
            nothing).
        json: also write the raw measurements (a list of {name, img_per_s, peak_mem_mb, status}) to this file.
    """
    record_start()
    t0 = time.perf_counter()
    rt = runtime.setup(device)  # as every tool: cuDNN autotuning on CUDA
    given = {"seconds": seconds, "warmup": warmup, "size": size, "small": small, "resnet_size": resnet_size,
             "batch": batch, "base": base}
    tiny = rt.device.type == "cpu" if tiny is None else tiny
    defaults = TINY if tiny else FULL
    if tiny and rt.device.type == "cpu":
        # one thread: tiny tensors gain nothing from more, and on a busy machine torch's spinning worker threads
        # made these steps up to 100x slower
        torch.set_num_threads(1)
    o = {k: defaults[k] if v is None else v for k, v in given.items()}
    out = defaults["out"] if out is None else out
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = phantom_sets(work, {o["size"], o["small"]}, n=max(2 * (o["batch"] or GanConfig.batch), 8))
        plan = Plan(device=rt.device, **o, sample_batch=o["batch"] or SampleConfig.batch,
                    fid_batch=o["batch"] or QualityConfig.batch, data=data, work=work)
        results = []
        for row in rows(plan):
            results.append(run_row(row, plan))
            console.print(f"{row.name}: {results[-1]['status']}")
        if make_all:
            # the GAN's rate as train_dcgan runs it: bf16 + channels-last on CUDA, fp32 on the CPU
            gan_rate = next((r["img_per_s"] for r in (results[2], results[0]) if r["img_per_s"]), None)
            results.append(make_all_nih(plan, gan_seconds or defaults["gan_seconds"], gan_rate,
                                        patients or defaults["patients"], defaults["make_all"]))
            console.print(f"{results[-1]['name']}: {results[-1]['status']}")
    table = show_table("GPU readiness", ["measurement", "img/s", "peak GPU memory (MiB)", "status"],
                       [cells(r) for r in results])
    if json:
        write_records(json, results)
    write_section("gpu", "GPU readiness", f"{describe(plan, time.perf_counter() - t0)}\n\n{table}\n", out)
    failed = [r["name"] for r in results if r["status"].startswith("failed")]
    if failed:
        sys.exit(f"error: {len(failed)} measurement(s) failed ({'; '.join(failed)}); their rows say why")


if __name__ == "__main__":
    fire.Fire(main)
