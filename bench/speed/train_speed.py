"""Training throughput: train_dcgan's seed recipe (images from HDF5, held in memory) against a seed-style loop
(the study's loader: full-resolution PNGs decoded, converted and resized per item every epoch by 4 DataLoader
workers) with the same DCGAN, loss, optimisers, G:D step ratio and batch, on the same images and machine."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import fire
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import record_start, fullres_pngs, show_table, write_section  # noqa: E402
from cxrgan.generative.dcgan import Discriminator, Generator
from cxrgan.generative.train import GanConfig, train
from cxrgan.data.ingest import IngestConfig, build_dataset


class PngFolder(Dataset):
    """The study's loader: open, convert, resize and normalise every image on every access."""

    def __init__(self, files, size):
        self.files = files
        self.tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                      transforms.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.tf(Image.open(self.files[i]).convert("L")), 0


def seed_style_loop(files, size: int, epochs: int, batch: int, workers: int) -> tuple[float, float]:
    """img/s and the share of time spent waiting for batches, for the study-style training loop."""
    torch.manual_seed(0)
    G, D = Generator(size), Discriminator(size)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 1e-4, betas=(0.5, 0.999))
    loader = DataLoader(PngFolder(files, size), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    bce = F.binary_cross_entropy_with_logits
    shown, waiting, t0 = 0, 0.0, time.perf_counter()
    for _ in range(epochs):
        it = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                real, _ = next(it)
            except StopIteration:
                break
            waiting += time.perf_counter() - t
            fake = G(torch.randn(batch, 100))
            out_r, out_f = D(real), D(fake.detach())
            loss_d = bce(out_r, torch.ones_like(out_r)) + bce(out_f, torch.zeros_like(out_f))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            for _ in range(2):
                out = D(G(torch.randn(batch, 100)))
                loss_g = bce(out, torch.ones_like(out))
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
            shown += batch
    seconds = time.perf_counter() - t0
    return shown / seconds, waiting / seconds


def main(src: str = None, n: int = 192, size: int = 64, epochs: int = 2, batch: int = 32, workers: int = 4,
         out: str = None):
    """Compare on ``n`` copies of the real full-resolution PNGs (all one class) at ``size``."""
    record_start()
    files = fullres_pngs(src)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        (tree / "No Finding").mkdir(parents=True)
        (tree / "Infiltration").mkdir()  # make_hdf5 wants two class folders; the benchmark trains class 0
        for k in range(n):
            (tree / "No Finding" / f"{k:08d}_000.png").symlink_to(files[k % len(files)])
        (tree / "Infiltration" / "00099999_000.png").symlink_to(files[0])
        data = Path(tmp) / "d.h5"
        build_dataset(IngestConfig(src=str(tree), out=str(data), size=size, balance=False, fractions="1,0,0",
                                   workers=2))
        result = train(GanConfig(data=str(data), out=f"{tmp}/gan", recipe="seed", cls=0, epochs=epochs, batch=batch,
                                 device="cpu", grid=4))
        ours, ours_wait = result["img_per_s"], result["data_fraction"]
        files_used = [tree / "No Finding" / f"{k:08d}_000.png" for k in range(n)]
        theirs, theirs_wait = seed_style_loop(files_used, size, epochs, batch, workers)
    rows = [["seed-style loop (PNG decode + resize per item, 4 workers)", f"{theirs:.1f}", f"{100 * theirs_wait:.1f}%",
             "1.00x"],
            ["train_dcgan --recipe seed (HDF5, in memory)", f"{ours:.1f}", f"{100 * ours_wait:.1f}%",
             f"{ours / theirs:.2f}x"]]
    table = show_table("training throughput", ["loop", "img/s", "time waiting for data", "vs seed-style"], rows)
    body = f"""Seed recipe (DCGAN {size}x{size}, batch {batch}, G stepped twice per D step, Adam, BCE) on {n} copies
of the 18 real 1024x1024 NIH PNGs, {epochs} epochs, CPU. train_dcgan's rate is over its whole loop, including
the per-epoch checkpoint, grid and loss-curve writes; the seed-style loop writes nothing. "Time waiting for
data": the share of the loop spent obtaining the next batch (the seed-style loop's DataLoader `next()`;
train_dcgan's in-memory indexing and conversion). At 64x64 on 2 CPU cores the networks dominate, so the gain
is bounded by the data share of the seed-style loop; the GPU comparison at 256x256 (target >= 3x) needs a GPU
machine and is not measured here.

{table}
"""
    write_section("train-speed", "GAN training throughput: HDF5 vs per-item PNG decoding", body, out)


if __name__ == "__main__":
    fire.Fire(main)
