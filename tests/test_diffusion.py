"""The diffusion recipe (gan/edm.py) on tiny phantoms: the denoiser learns, training resumes exactly, sampling is
deterministic, guidance 0 is the unconditional model, and sample.py writes the same samples contract as for GANs."""

import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cxrgan.data.datasetfile import SAMPLES_SCHEMA, read_info
from cxrgan.data.reader import H5ImageDataset, to_model_input
from cxrgan.gan.edm import Denoiser, EDMGenerator, edm_loss, heun_sample, sigma_schedule
from cxrgan.gan.sample import resolve_generators, sample_to_file
from cxrgan.gan.train import GanConfig, train
from conftest import ROOT, run_tool

TINY = dict(batch=8, base=8, grid=4, device="cpu")


def test_a_few_steps_reduce_the_denoising_loss_on_a_fixed_batch(phantoms):
    torch.manual_seed(0)
    ds = H5ImageDataset(phantoms, "train", in_memory=True)
    x, y = to_model_input(torch.from_numpy(ds.images[:16])), torch.from_numpy(ds.labels[:16])
    model = Denoiser(32, base=8, n_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss(seed):
        return edm_loss(model, x, y, 2, p_uncond=0.0, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = np.mean([loss(s).item() for s in range(8)])
    for step in range(40):
        opt.zero_grad()
        loss(100 + step).backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([loss(s).item() for s in range(8)])  # the same noise as before training
    assert after < 0.7 * before, (before, after)


def test_resume_gives_identical_weights(phantoms, tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train(GanConfig(data=str(phantoms), out=str(straight), recipe="diffusion", epochs=2, **TINY))
    train(GanConfig(data=str(phantoms), out=str(resumed), recipe="diffusion", epochs=1, **TINY))
    train(GanConfig(data=str(phantoms), out=str(resumed), recipe="diffusion", epochs=2, **TINY))
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["model"]["kind"] == "edm" and a["discriminator"] == {} and a["opt_d"] is None
    for key in ("generator", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    rows = list(csv.DictReader(open(resumed / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, a["step"] + 1))
    assert all(float(r["loss_g"]) > 0 and float(r["loss_d"]) == 0 for r in rows)


def test_kill_9_mid_run_then_resume_finishes(phantoms, tmp_path):
    args = [sys.executable, str(ROOT / "tools" / "train_diffusion.py"), "--data", phantoms, "--out", tmp_path,
            "--epochs", "4", "--batch", "8", "--base", "8", "--grid", "4", "--device", "cpu"]
    proc = subprocess.Popen(list(map(str, args)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "ckpt-000002.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(list(map(str, args)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 4 and saved["config"]["recipe"] == "diffusion"
    steps = [int(row["step"]) for row in csv.DictReader(open(tmp_path / "losses.csv"))]
    assert steps == list(range(1, saved["step"] + 1))


@pytest.fixture(scope="module")
def diffusion_run(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion")
    train(GanConfig(data=str(phantoms), out=str(out), recipe="diffusion", epochs=1, **TINY))
    return out


def test_sampling_is_deterministic_per_seed(diffusion_run, tmp_path):
    gens = resolve_generators(str(diffusion_run), diffusion_run, [0, 1], "cpu")
    for name, seed in (("a.h5", 3), ("b.h5", 3), ("c.h5", 4)):
        sample_to_file(tmp_path / name, gens, 4, seed, "cpu", steps=4)
    a, b, c = (H5ImageDataset(tmp_path / n, "synthetic").read_uint8(range(8)) for n in ("a.h5", "b.h5", "c.h5"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert read_info(tmp_path / "a.h5", (SAMPLES_SCHEMA,)).attrs["sampler"] == {"steps": 4, "guidance": 1.0}


def test_guidance_zero_is_the_unconditional_model():
    torch.manual_seed(0)
    model = Denoiser(32, base=8, n_classes=2).eval()
    for p in model.parameters():  # away from the zero initialisation, so the label matters
        p.data.add_(torch.randn_like(p) * 0.05)
    noise, labels = torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 1])
    none = torch.full_like(labels, 2)
    guided0 = heun_sample(model, noise, labels, steps=3, guidance=0.0)
    assert torch.equal(guided0, heun_sample(model, noise, none, steps=3, guidance=1.0))
    assert not torch.equal(guided0, heun_sample(model, noise, labels, steps=3, guidance=1.0))
    strong = heun_sample(model, noise, labels, steps=3, guidance=2.0)
    assert strong.shape == (3, 1, 32, 32) and strong.abs().max() <= 1


def test_schedule_and_generator_shapes():
    s = sigma_schedule(5)
    assert s[0] == 80 and abs(s[-2] - 0.002) < 1e-9 and s[-1] == 0 and bool((s[:-1] > s[1:]).all())
    with pytest.raises(ValueError, match="one value per pixel"):
        EDMGenerator(32, 100, base=8)


def test_sample_cli_takes_steps_and_guidance(diffusion_run, tmp_path):
    out = tmp_path / "s.h5"
    r = run_tool("sample.py", "--n", "3", "--ckpt", diffusion_run, "--out", out, "--steps", "3", "--guidance", "1.5",
                 "--device", "cpu")
    assert r.returncode == 0, r.stderr
    info = read_info(out, (SAMPLES_SCHEMA,))
    assert info.attrs["sampler"] == {"steps": 3, "guidance": 1.5} and info.attrs["recipe"] == ["diffusion"]
    assert H5ImageDataset(out, "synthetic").read_uint8(range(6)).shape == (6, 32, 32)
    r = run_tool("sample.py", "--n", "3", "--ckpt", diffusion_run, "--out", tmp_path / "x.h5", "--guidance", "-1")
    assert r.returncode == 2 and "--guidance" in r.stderr
