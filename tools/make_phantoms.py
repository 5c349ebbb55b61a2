#!/usr/bin/env python3
"""Build a cxrgan HDF5 dataset (docs/dataset-format.md) of procedural chest-radiograph-like phantoms.

Phantoms are NOT medical images: they are drawn from simple shapes, need no download and carry no patient data."""

import time

from cxrgan import cli
from cxrgan.data.datasetfile import DEFAULT_CLASSES
from cxrgan.data.phantoms import PhantomConfig, generate


def make_phantoms(cfg: PhantomConfig, call_args: dict):
    """Write a dataset file of synthetic chest-X-ray-like phantoms (NOT medical images), split by patient.

    Phantoms are not medical images and say nothing about real patients: each is drawn from simple shapes
    (thorax, lungs, ribs, spine, heart shadow on the image right, diaphragm); class "Infiltration" adds patchy
    opacities in the lungs, class "No Finding" has clear lungs. They exist so the pipeline runs end to end
    without downloading real data. Half the images are of each class (an odd one goes to "No Finding"); each
    synthetic patient has 1-3 images of one class, and the train/val/test split keeps every patient in one
    split. Same seed, same file content.

    Args:
        out: the HDF5 file to write (written to a temp file, renamed when complete).
        n: number of images, at least 2 (default 400).
        size: image side in pixels, a power of two from 16 to 512 (default 64).
        seed: seed for the images and the patient split (default 0).
        fractions: train,val,test fractions of images, split by patient (default 0.7,0.1,0.2).
        overwrite: replace an existing --out.
    """
    cfg.validate()
    t0 = time.perf_counter()
    with cli.progress_bars() as progress:
        attrs = generate(cfg.out, cfg.n, cfg.size, cfg.seed, cfg.fractions, call_args=call_args, progress=progress)
    seconds = time.perf_counter() - t0
    cli.console.print(cli.counts_table(f"{cfg.out} ({cfg.size}x{cfg.size}, phantoms)", attrs["counts"],
                                       list(DEFAULT_CLASSES)))
    cli.console.print(f"wrote {cfg.n} images in {seconds:.1f}s ({cli.rate_text(cfg.n, seconds)})")
    cli.console.print("[yellow]note:[/] phantoms are synthetic drawings, not medical images")


main = cli.command(PhantomConfig, make_phantoms)

if __name__ == "__main__":
    cli.run(main, name="make_phantoms.py")
