#!/usr/bin/env python3
"""Where the laptop run's minutes go: is it faster to train the GAN while the classifier's control arms train (one
core each) than to run them one after the other on both cores?

`make all` on nih-mini runs its stages one after the other, each with 2 intra-op threads. The real and oversampling
arms do not need the GAN, so they could train beside it. This measures one GAN stage and one classifier arm, as the
Makefile runs them (tools/train_dcgan.py and tools/train_resnet.py in their own processes, on nih-mini at 64x64):

- serial: each alone with 2 threads, one after the other (what `make all` does);
- side by side: both at once, 1 thread each (OMP_NUM_THREADS=1), the makespan until both have finished;
- side by side, 2 threads each: the same, oversubscribed (what `make -j2` would do without a thread setting).

The GAN trains --kimg thousand images of the default laptop recipe; the classifier arm is real + oversampling with
--clf-seeds seeds of --clf-epochs epochs, as `make all` trains it.

    python bench/speed/overlap.py [--kimg 6] [--clf-seeds 1] [--out ""]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import ROOT, log, record_start, show_table, write_section  # noqa: E402

PY = sys.executable


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _commands(data: Path, tmp: Path, recipe: str, kimg: float, clf_epochs: int, clf_seeds: int, tag: str):
    gan = [PY, "tools/train_dcgan.py", "--overwrite", "--data", str(data), "--out", str(tmp / f"gan-{tag}"),
           "--recipe", recipe, "--kimg", str(kimg), "--seed", "0", "--device", "cpu"]
    real = tmp / "real"
    clf = [PY, "tools/train_resnet.py", "--overwrite", "--data", str(data), "--out", str(tmp / f"clf-{tag}"),
           "--epochs", str(clf_epochs), "--seeds", str(clf_seeds), "--seed", "0", "--size", "64", "--device", "cpu",
           "--synthetic-ratio", "1", "--control", "oversample", "--baseline", str(real)]
    return gan, clf


def _timed(cmds: list[list[str]], threads: int) -> tuple[float, list[float]]:
    """Start every command at once with ``threads`` intra-op threads; (makespan, each one's seconds)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in cmds]
    ends = [0.0] * len(procs)
    while any(e == 0.0 for e in ends):
        for i, p in enumerate(procs):
            if ends[i] == 0.0 and p.poll() is not None:
                ends[i] = time.perf_counter() - t0
                if p.returncode:
                    raise SystemExit(f"error: {' '.join(cmds[i][:2])} failed: {p.stderr.read().decode()[-400:]}")
        time.sleep(0.2)
    return max(ends), ends


def main(kimg: float = 6, clf_epochs: int = 6, clf_seeds: int = 1, recipe: str = "", out: str | None = None) -> None:
    """Time the three schedules; write the section "Overlapping the GAN with the control arms" (out="": nothing)."""
    record_start()
    from cxrgan.data.ingest import IngestConfig, build_dataset
    from cxrgan.generative.recipes import LAPTOP_RECIPE

    recipe = recipe or LAPTOP_RECIPE
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "nih-mini-64.h5"
        build_dataset(IngestConfig(src=str(ROOT / "data" / "nih-mini"), out=str(data), size=64, balance=False,
                                   workers=1, seed=0))
        # the baseline real arm the oversampling arm is paired with (not timed)
        subprocess.run([PY, "tools/train_resnet.py", "--overwrite", "--data", str(data), "--out", str(tmp / "real"),
                        "--epochs", "1", "--seeds", str(clf_seeds), "--seed", "0", "--size", "64", "--device", "cpu"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rows = []
        gan, clf = _commands(data, tmp, recipe, kimg, clf_epochs, clf_seeds, "serial")
        _, (g,) = _timed([gan], 2)
        _, (c,) = _timed([clf], 2)
        rows.append(["one after the other, 2 threads each", f"{g:.0f}", f"{c:.0f}", f"{g + c:.0f}", "1.00x"])
        log(f"serial: GAN {g:.0f} s + classifier {c:.0f} s")
        for threads in (1, 2):
            span, (g2, c2) = _timed(list(_commands(data, tmp, recipe, kimg, clf_epochs, clf_seeds, f"side{threads}")),
                                    threads)
            rows.append([f"side by side, {threads} thread{'s' * (threads > 1)} each", f"{g2:.0f}", f"{c2:.0f}",
                         f"{span:.0f}", f"{(g + c) / span:.2f}x"])
            log(f"side by side, {threads} threads: GAN {g2:.0f} s, classifier {c2:.0f} s, makespan {span:.0f} s")
    table = show_table("GAN training beside a control arm (nih-mini, 64x64)",
                       ["schedule", "GAN s", "classifier arm s", "both done s", "speed-up"], rows)
    write_section("overlap", "Overlapping the GAN with the control arms (2-core CPU)",
                  f"{table}\n\nThe GAN: `{recipe}` for {kimg:g} kimg; the classifier: the real + oversampling arm, "
                  f"{clf_seeds} seed(s) × {clf_epochs} epochs, as `make all` trains it. Each in its own process, "
                  "as the Makefile runs them; \"side by side\" starts both at once (OMP_NUM_THREADS per process).",
                  out)


if __name__ == "__main__":
    fire.Fire(main)
