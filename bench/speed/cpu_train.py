#!/usr/bin/env python3
"""Generator training throughput on the CPU: the `make all` recipes (the `limited` GAN, `diffusion`) at 64x64 on
nih-mini, each under the candidate settings of a faster laptop run (issue 25): intra-op threads, a larger batch,
fewer filters, channels-last memory layout, bf16 autocast, torch.compile. One row per variant, all in one run on
one machine (one section of docs/benchmarks.md per CPU model).

Throughput is train_dcgan's own img/s over whole epochs (checkpoint writes included, as in `make all`), after a
warm-up epoch that is not counted (compilation, allocator); each variant trains for about --kimg more. Quality per
image shown is measured separately (bench/experiments/cpu_budget.py): a faster variant is only a win at equal or
better quality per kimg.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import ROOT, cpu_model, log, record_start, show_table, write_section  # noqa: E402
from cxrgan import runtime  # noqa: E402
from cxrgan.generative.train import GanConfig, train  # noqa: E402

WARMUP_EPOCHS = 1  # about 0.33 kimg on nih-mini's training images
# name: (recipe, intra-op threads, GanConfig overrides, CPU probe: "channels-last", "bf16" or None)
VARIANTS = {
    "limited (2 threads, batch 32, base 64)": ("limited", 2, {}, None),
    "limited, 1 thread": ("limited", 1, {}, None),
    "limited, batch 64": ("limited", 2, {"batch": 64}, None),
    "limited, base 48": ("limited", 2, {"base": 48}, None),
    "limited, base 32 (the laptop recipe)": ("limited", 2, {"base": 32}, None),
    "limited, channels-last": ("limited", 2, {}, "channels-last"),
    "limited, bf16 autocast": ("limited", 2, {}, "bf16"),
    "limited, base 32, bf16 autocast": ("limited", 2, {"base": 32}, "bf16"),
    "limited, torch.compile": ("limited", 2, {"compile": True}, None),
    "diffusion (2 threads, batch 32, base 16)": ("diffusion", 2, {}, None),
    "diffusion, 1 thread": ("diffusion", 1, {}, None),
    "diffusion, batch 64": ("diffusion", 2, {"batch": 64}, None),
    "diffusion, channels-last": ("diffusion", 2, {}, "channels-last"),
    "diffusion, bf16 autocast": ("diffusion", 2, {}, "bf16"),
}


@contextmanager
def cpu_probe(probe: str | None):
    """Try on the CPU what the Runtime does only on CUDA: "channels-last" (its layout hook: channels-last modules
    and batches) or "bf16" (its autocast: bf16 mixed precision, which oneDNN runs on AVX512-BF16/AMX where the CPU
    has them). The benchmark's own patch, undone after; the tools keep float32 on the CPU."""
    if probe is None:
        yield
        return
    if probe == "channels-last":
        def hook(self, x):
            return x.to(memory_format=torch.channels_last) if isinstance(x, torch.nn.Module) else \
                x.contiguous(memory_format=torch.channels_last)
        name = "layout"
    else:
        def hook(self):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        name = "autocast"
    original = getattr(runtime.Runtime, name)
    setattr(runtime.Runtime, name, hook)
    try:
        yield
    finally:
        setattr(runtime.Runtime, name, original)


def measure(data: Path, recipe: str, threads: int, overrides: dict, probe: str | None, epochs: int) -> dict:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp, cpu_probe(probe):
        common = dict(data=str(data), out=str(Path(tmp) / "run"), recipe=recipe, seed=0, device="cpu", grid=4,
                      ckpt_every=1000, **overrides)
        warm = train(GanConfig(epochs=WARMUP_EPOCHS, **common))
        return {**train(GanConfig(epochs=WARMUP_EPOCHS + epochs, **common)), "warm_kimg": warm["kimg"]}


def main(kimg: float = 1.0, only: str = "", out: str | None = None) -> None:
    """Measure every variant (or those whose name contains --only) for --kimg thousand images after the warm-up.

    Args:
        kimg: thousands of training images per variant, after the warm-up (default 1).
        only: measure only the variants whose name contains this.
        out: the markdown file to update (default docs/benchmarks.md; "" writes nothing). With --only nothing is
            written.
    """
    record_start()
    from cxrgan.data.ingest import IngestConfig, build_dataset
    from cxrgan.data.reader import H5ImageDataset

    work = ROOT / "build" / "bench" / "cpu-train"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "nih-mini-64.h5"
    if not data.exists():
        build_dataset(IngestConfig(src=str(ROOT / "data" / "nih-mini"), out=str(data), size=64, balance=False,
                                   workers=1, seed=0))
    n_train = len(H5ImageDataset(data, "train"))
    rows, baseline = [], {}
    for name, (recipe, threads, overrides, probe) in VARIANTS.items():
        if only and only not in name:
            continue
        batch = overrides.get("batch", 32)
        per_epoch = n_train // batch * batch / 1000  # kimg per epoch: full batches
        try:
            r = measure(data, recipe, threads, overrides, probe, max(1, round(kimg / per_epoch)))
        except RuntimeError as e:  # a variant that does not run is a result too
            rows.append([name, "fails: " + str(e).splitlines()[0][:90], "–", "–"])
            log(f"{name}: {rows[-1][1]}")
            continue
        rate = r["img_per_s"]
        baseline.setdefault(recipe, rate)
        rows.append([name, f"{rate:.1f}", f"{rate / baseline[recipe]:.2f}x", f"{r['kimg'] - r['warm_kimg']:.2f}"])
        log(f"{name}: {rate:.1f} img/s")
    table = show_table("generator training on the CPU (64x64, nih-mini)",
                       ["variant", "img/s", "vs first row", "kimg"], rows)
    if only:
        return
    # one section per CPU model: the same variants run at very different speeds on different CPUs
    cpu = cpu_model()
    write_section(f"cpu-train-{''.join(c if c.isalnum() else '-' for c in cpu).strip('-')}",
                  f"Generator training throughput on the CPU (64x64, nih-mini): {cpu}",
                  f"{table}\n\nEach variant: a warm-up epoch, then about {kimg} kimg timed (train_dcgan's "
                  "img/s over whole epochs, checkpoints included). \"vs first row\": against the first row of the "
                  "same recipe. Quality per kimg is measured separately (\"Quality per CPU-minute\").", out)

if __name__ == "__main__":
    fire.Fire(main)
