"""Sampling throughput: tools/sample.py's path (batched generation straight into one HDF5 file) against the study's
way (generate, then save every image as its own PNG with torchvision's save_image), same generator and images."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import fire
import torch
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import record_start, show_table, write_section  # noqa: E402
from cxrgan.generative.dcgan import Generator
from cxrgan.generative.sample import LoadedGenerator, latents, sample_to_file


def main(n: int = 500, size: int = 64, batch: int = 256, out: str = None):
    """Time ``n`` images per class (one class) from an untrained seed-recipe generator at ``size``."""
    record_start()
    torch.manual_seed(0)
    G = Generator(size).eval()
    model = {"kind": "dcgan", "size": size, "latent": 100, "base": 64, "channels": 1, "n_classes": 2,
             "classes": ["No Finding", "Infiltration"], "cls": 0}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "g.pt"
        torch.save({"generator": G.state_dict()}, ckpt)  # sample_to_file records the checkpoint's hash
        gens = {0: LoadedGenerator(ckpt, G, model, "adversarial", "generator", "study-dcgan", 0)}
        t0 = time.perf_counter()
        sample_to_file(Path(tmp) / "s.h5", gens, n, 0, torch.device("cpu"), batch)
        ours = time.perf_counter() - t0

        z = latents(n, 100, 0, 0, None)
        t0 = time.perf_counter()
        with torch.no_grad():
            images = torch.cat([G(z[i:i + batch]) for i in range(0, n, batch)])
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, image in enumerate(images):
            save_image(image, Path(tmp) / f"{i:06d}.png", normalize=True, value_range=(-1, 1))
        png_s = time.perf_counter() - t0
    theirs = generate_s + png_s
    rows = [["generate + save_image per PNG (study)", f"{theirs:.2f}", f"{n / theirs:,.0f}", f"{png_s:.2f}", "1.00x"],
            ["sample.py path (one HDF5)", f"{ours:.2f}", f"{n / ours:,.0f}", f"{ours - generate_s:.2f}",
             f"{theirs / ours:.2f}x"]]
    table = show_table("sampling", ["method", "seconds", "img/s", "writing s (total - generation)", "speed-up"], rows)
    body = f"""{n} images at {size}x{size} from the same DCGAN generator (untrained: sampling cost does not depend on
the weights), batches of {batch}, CPU. Generation alone took {generate_s:.2f} s; the rest is writing. Target from
the issue: >= 5x. On the CPU the generator's forward pass dominates both paths, which caps the end-to-end ratio;
the writing stage alone is compared in the "writing" column.

{table}
"""
    write_section("sample-speed", "Sampling throughput: HDF5 vs one PNG per image", body, out)


if __name__ == "__main__":
    fire.Fire(main)
