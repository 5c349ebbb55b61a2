#!/usr/bin/env python3
"""Build a cxrgan HDF5 dataset (docs/dataset-format.md) of procedural chest-radiograph-like phantoms.

Phantoms are NOT medical images: they are drawn from simple shapes, need no download and carry no patient data.
"""

import time

from cxrgan import cli
from cxrgan.datasetfile import DEFAULT_CLASSES
from cxrgan.fileio import check_output_path
from cxrgan.phantoms import check_args, generate
from cxrgan.splits import parse_fractions


def make_phantoms(out: str, n: int = 400, size: int = 64, seed: int = 0, fractions="0.7,0.1,0.2",
                  overwrite: bool = False):
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
    call_args = dict(locals())
    check_args(n, size)
    fractions = parse_fractions(fractions)
    check_output_path(out, overwrite)
    t0 = time.perf_counter()
    with cli.progress() as bar:
        task = bar.add_task("render + write", total=n, rate="")

        def on_image(done: int) -> None:
            if done % 16 == 0 or done == n:  # redrawing for every image would cost more than rendering it
                bar.update(task, completed=done, rate=cli.rate_text(done, time.perf_counter() - t0))

        attrs = generate(out, n, size, seed, fractions, call_args=call_args, on_image=on_image)
    seconds = time.perf_counter() - t0
    cli.console.print(cli.counts_table(f"{out} ({size}x{size}, phantoms)", attrs["counts"], list(DEFAULT_CLASSES)))
    cli.console.print(f"wrote {n} images in {seconds:.1f}s ({cli.rate_text(n, seconds)})")
    cli.console.print("[yellow]note:[/] phantoms are synthetic drawings, not medical images")


if __name__ == "__main__":
    cli.run(make_phantoms, name="make_phantoms.py")
