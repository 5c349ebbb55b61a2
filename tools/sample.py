#!/usr/bin/env python3
"""Generate synthetic chest X-rays from trained GAN checkpoints into a samples HDF5 file."""

import time
from pathlib import Path

from cxrgan import cli
from cxrgan.errors import UserError
from cxrgan.fileio import check_output_path
from cxrgan.gantrain import setup_runtime
from cxrgan.sampling import resolve_generators, sample_to_file


def sample(n: int = 500, ckpt: str = None, out: str = "outputs/synthetic.h5", cls="both", seed: int = 0,
           batch: int = 256, png: str = None, truncation: float = None, root: str = "outputs/gan",
           device: str = "auto", overwrite: bool = True):
    """Write --n generated images per class to a samples file (schema cxrgan-samples/1, split "synthetic").

    With nothing given it uses the newest checkpoint(s) under outputs/gan/: a conditional (improved-recipe)
    checkpoint covers every class; seed-recipe models have one checkpoint per class. EMA weights are used when
    the checkpoint has them. Paths are relative to the working directory.

    Args:
        n: images per class (default 500).
        ckpt: checkpoint file(s), comma-separated; default: the newest under --root.
        out: samples file to write (default outputs/synthetic.h5; temp file + rename).
        cls: 0, 1 or both (default both).
        seed: seed of the latent vectors (same seed, same images).
        batch: images per generator call (default 256).
        png: also write each image as DIR/<class>/<name>.png.
        truncation: redraw latent entries beyond +-T (the truncation trick); default off.
        root: where to look for checkpoints when --ckpt is not given (default outputs/gan).
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        overwrite: replace an existing --out (default on; --nooverwrite refuses).
    """
    call_args = dict(locals())
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"--n must be a whole number >= 1 (images per class), got {n!r}")
    if not isinstance(batch, int) or batch < 1:
        raise UserError(f"--batch must be a whole number >= 1, got {batch!r}")
    if truncation is not None and (not isinstance(truncation, (int, float)) or truncation <= 0):
        raise UserError(f"--truncation must be a positive number, got {truncation!r}")
    if cls not in ("both", 0, 1) and not isinstance(cls, int):
        raise UserError(f"--cls must be 0, 1 or both, got {cls!r}")
    out_path = check_output_path(out, overwrite)
    rt = setup_runtime(device)
    gens = resolve_generators(ckpt, root, [0, 1] if cls == "both" else [cls], rt.device)
    classes = next(iter(gens.values())).model["classes"]
    if cls != "both" and not 0 <= cls < len(classes):
        raise UserError(f"--cls {cls}: the checkpoint has classes 0..{len(classes) - 1} ({classes})")
    t0 = time.perf_counter()
    with cli.progress() as bar:
        task = bar.add_task("sample", total=n * len(gens), rate="")
        attrs = sample_to_file(out_path, gens, n, seed, rt.device, batch, truncation, png, call_args,
                               on_batch=lambda k: bar.update(task, advance=k,
                                                             rate=cli.rate_text(bar.tasks[0].completed + k,
                                                                                time.perf_counter() - t0)))
    seconds = time.perf_counter() - t0
    for c, g in sorted(gens.items()):
        cli.console.print(f"class {c} ({classes[c]}): {n} images from {g.path} ({g.recipe} recipe, epoch {g.epoch}, "
                          f"{g.weights} weights)")
    cli.console.print(f"wrote {Path(out)} ({n * len(gens)} images, {attrs['size']}x{attrs['size']}) in {seconds:.1f}s")


if __name__ == "__main__":
    cli.run(sample, name="sample.py")
