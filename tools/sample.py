#!/usr/bin/env python3
"""Generate synthetic chest X-rays from trained GAN checkpoints into a samples HDF5 file."""

import time
from pathlib import Path

from cxrgan import cli, runtime
from cxrgan.generative.sample import STEPS, SampleConfig, resolve_generators, sample_to_file


def sample(cfg: SampleConfig, call_args: dict):
    """Write --n generated images per class to a samples file (schema cxrgan-samples/1, split "synthetic"), from
    GAN or diffusion checkpoints (`diffusion` is sampled with EDM's deterministic Heun sampler, `diffusion-ddpm`
    with deterministic DDIM).

    With nothing given it uses the newest checkpoint(s) under outputs/gan/: a conditional (improved-recipe)
    checkpoint covers every class; seed-recipe models have one checkpoint per class. EMA weights are used when
    the checkpoint has them. Paths are relative to the working directory.

    Args:
        n: images per class (default 500).
        ckpt: checkpoint file(s) or run folder(s), comma-separated (a folder: its best.pt when train_dcgan
            --select-snapshot wrote one, else last.pt); default: the newest under --root.
        out: samples file to write (default outputs/synthetic.h5; temp file + rename).
        cls: 0, 1 or both (default both).
        seed: seed of the latent vectors (same seed, same images).
        batch: images per generator call (default 256).
        png: also write each image as DIR/<class>/<name>.png.
        truncation: GAN checkpoints: redraw latent entries beyond +-T (the truncation trick); default off;
            refused for diffusion checkpoints (their noise is not a latent code).
        root: where to look for checkpoints when --ckpt is not given (default outputs/gan).
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        overwrite: replace an existing --out (default off: an existing file is refused).
        steps: diffusion checkpoints: steps of the deterministic sampler: EDM's Heun for `diffusion` (default 18:
            35 network calls per image; 10 is about twice as fast), DDIM for `diffusion-ddpm` (one call per step);
            refused for GAN checkpoints.
        guidance: diffusion checkpoints: classifier-free guidance scale (default 1: the plain conditional model;
            0: unconditional; above 1: sharper classes, less diversity); refused for GAN checkpoints.
        solver: diffusion checkpoints: the sampler's ODE solver: heun (EDM's, 2 * steps - 1 calls), euler (DDIM
            on `diffusion-ddpm`, steps calls) or dpm++2m (DPM-Solver++(2M): second order at one call per step);
            default: the recipe's own (heun for `diffusion`, euler for `diffusion-ddpm`); refused for GANs.
    """
    cfg.validate()
    device = runtime.setup(cfg.device).device
    gens = resolve_generators(cfg.ckpt, cfg.root, cfg.wanted, device)
    cfg.check_applies_to(gens)
    classes = next(iter(gens.values())).model["classes"]
    t0 = time.perf_counter()
    with cli.progress_bars() as progress:
        attrs = sample_to_file(Path(cfg.out), gens, cfg.n, cfg.seed, device, cfg.batch, cfg.truncation, cfg.png,
                               call_args, progress, STEPS if cfg.steps is None else cfg.steps,
                               1.0 if cfg.guidance is None else cfg.guidance, cfg.solver)
    seconds = time.perf_counter() - t0
    for c, g in sorted(gens.items()):
        cli.console.print(f"class {c} ({classes[c]}): {cfg.n} images from {g.path} ({g.recipe} recipe, epoch "
                          f"{g.epoch}, {g.weights} weights)")
    cli.console.print(f"wrote {Path(cfg.out)} ({cfg.n * len(gens)} images, {attrs['size']}x{attrs['size']}) in "
                      f"{seconds:.1f}s")


main = cli.command(SampleConfig, sample)

if __name__ == "__main__":
    cli.run(main, name="sample.py")
