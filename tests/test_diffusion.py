"""The diffusion recipes (generative/unet.py, diffusion.py: EDM, and DDPM sampled by DDIM) on tiny phantoms: the denoiser learns, training
resumes exactly, sampling is deterministic, guidance 0 is the unconditional model, and sample.py writes the same
samples contract as for GANs."""

import csv
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cxrgan.data.datasetfile import SAMPLES_SCHEMA, read_info
from cxrgan.data.reader import H5ImageDataset, to_model_input
from cxrgan.generative.diffusion import (DDPM_T, SOLVERS, ddim_sample, ddim_schedule, ddpm_loss, ddpm_sigmas, edm_loss,
                                        heun_sample, ode_sample, sigma_schedule)
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.unet import Denoiser, EpsDenoiser
from cxrgan.generative.sample import resolve_generators, sample_to_file
from cxrgan.generative.train import GanConfig, train
from conftest import ROOT, run_tool

TINY = dict(batch=8, base=8, grid=4, device="cpu")


PARAMETRIZATIONS = {"edm": (Denoiser, edm_loss, heun_sample), "ddpm": (EpsDenoiser, ddpm_loss, ddim_sample)}


@pytest.mark.parametrize("kind", PARAMETRIZATIONS)
def test_a_few_steps_reduce_the_denoising_loss_on_a_fixed_batch(phantoms, kind):
    denoiser, loss_fn, _ = PARAMETRIZATIONS[kind]
    torch.manual_seed(0)
    ds = H5ImageDataset(phantoms, "train", in_memory=True)
    x, y = to_model_input(torch.from_numpy(ds.images[:16])), torch.from_numpy(ds.labels[:16])
    model = denoiser(32, base=8, n_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss(seed):
        return loss_fn(model, x, y, 2, p_uncond=0.0, generator=torch.Generator().manual_seed(seed))

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
    assert a["model"]["kind"] == "edm" and a["objective"] == "denoising" and list(a["networks"]) == ["denoiser"]
    assert list(a["optimizers"]) == ["denoiser"]  # no stand-in discriminator, no second optimiser
    for weights_a, weights_b in ((a["networks"]["denoiser"], b["networks"]["denoiser"]), (a["ema"], b["ema"])):
        for name in weights_a:
            assert torch.equal(weights_a[name], weights_b[name]), name
    rows = list(csv.DictReader(open(resumed / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, a["step"] + 1))
    assert list(rows[0]) == ["epoch", "step", "kimg", "loss", "img_per_s", "seconds"]
    assert all(float(r["loss"]) > 0 for r in rows)


def test_kill_9_mid_run_then_resume_is_bit_identical(phantoms, tmp_path):
    def args(out):
        return list(map(str, [sys.executable, ROOT / "tools" / "train_diffusion.py", "--data", phantoms, "--out", out,
                              "--epochs", "4", "--batch", "8", "--base", "8", "--grid", "4", "--device", "cpu"]))

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(args(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "ckpt-000002.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    was_running = proc.poll() is None
    if was_running:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    for out in (killed, straight):
        r = subprocess.run(args(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    a, b = (torch.load(out / "last.pt", weights_only=True) for out in (killed, straight))
    assert a["epoch"] == b["epoch"] == 4 and a["config"]["recipe"] == "diffusion"
    for weights_a, weights_b in ((a["networks"]["denoiser"], b["networks"]["denoiser"]), (a["ema"], b["ema"])):
        for name in weights_a:
            assert torch.equal(weights_a[name], weights_b[name]), (name, was_running)
    steps = [int(row["step"]) for row in csv.DictReader(open(killed / "losses.csv"))]
    assert steps == list(range(1, a["step"] + 1))


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
    assert read_info(tmp_path / "a.h5", (SAMPLES_SCHEMA,)).attrs["sampler"] == {"steps": 4, "guidance": 1.0,
                                                                                "solver": "heun"}


@pytest.mark.parametrize("kind", PARAMETRIZATIONS)
def test_guidance_zero_is_the_unconditional_model(kind):
    denoiser, _, sample = PARAMETRIZATIONS[kind]
    torch.manual_seed(0)
    model = denoiser(32, base=8, n_classes=2).eval()
    for p in model.parameters():  # away from the zero initialisation, so the label matters
        p.data.add_(torch.randn_like(p) * 0.05)
    noise, labels = torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 1])
    none = torch.full_like(labels, 2)
    guided0 = sample(model, noise, labels, steps=3, guidance=0.0)
    assert torch.equal(guided0, sample(model, noise, none, steps=3, guidance=1.0))
    assert not torch.equal(guided0, sample(model, noise, labels, steps=3, guidance=1.0))
    strong = sample(model, noise, labels, steps=3, guidance=2.0)
    assert strong.shape == (3, 1, 32, 32) and strong.abs().max() <= 1


def _ddpm_schedule():
    betas = torch.linspace(1e-4, 0.02, DDPM_T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def test_ddpm_in_edm_terms_matches_ddpm_forward_process():
    """x_t = sqrt(a) x0 + sqrt(1 - a) eps is (x0 + sigma_t eps) scaled by sqrt(a); the network sees DDPM's x_t, and
    epsilon-prediction's denoiser returns x - sigma * eps_hat, so a perfect noise predictor denoises exactly."""
    alpha_bar, sigmas = _ddpm_schedule(), ddpm_sigmas()
    x0, eps = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    for t in (0, 499, 999):
        x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps
        assert torch.allclose(x_t / alpha_bar[t].sqrt(), x0 + sigmas[t] * eps)
    t = 500
    x_t = (alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps).float()
    seen = []
    model = EpsDenoiser(8, base=8, n_classes=2)
    model.net.forward = lambda x_in, c_noise, labels: seen.append(x_in) or eps.float()  # the perfect predictor
    out = model((x0 + sigmas[t] * eps).float(), torch.full((2,), float(sigmas[t])), torch.tensor([0, 1]))
    assert torch.allclose(seen[0], x_t, atol=1e-5)  # the network's input is DDPM's x_t
    assert torch.allclose(out, x0.float(), atol=1e-4)
    s = ddim_schedule(10)
    assert len(s) == 11 and s[-1] == 0 and torch.isclose(s[0], sigmas[-1]) and torch.isclose(s[-2], sigmas[0])
    assert bool((s[:-1] > s[1:]).all())


def test_ddpm_loss_is_the_epsilon_mse():
    model = EpsDenoiser(8, base=8, n_classes=2)
    f = torch.randn(3, 1, 8, 8)
    model.net.forward = lambda x_in, c_noise, labels: f
    x0, labels = torch.rand(3, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 1])
    loss = ddpm_loss(model, x0, labels, 2, p_uncond=0.0, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws, in ddpm_loss's order: timesteps, then noise
    torch.randint(0, DDPM_T, (3,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.allclose(loss, ((f - eps) ** 2).mean(), rtol=1e-4)


def test_one_ddim_step_is_the_ddim_update():
    """DDIM (eta 0) from t to t': x_t' = sqrt(a') x0_hat + sqrt(1 - a') eps', with x0_hat the prediction clipped to
    [-1, 1] and eps' the noise that x0_hat implies, as DDPM/DDIM sample; ddim_sample takes exactly that step."""
    alpha_bar, sigmas = _ddpm_schedule(), ddpm_sigmas()
    model = EpsDenoiser(8, base=8, n_classes=2)
    eps_hat = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    model.net.forward = lambda x_in, c_noise, labels: eps_hat.float()
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t, t2 = 999, 0  # ddim_schedule(2): timesteps 999 and 0
    x_t = noise * sigmas[t] * alpha_bar[t].sqrt()  # the sampler's start, as DDPM's x_T
    x0_hat = ((x_t - (1 - alpha_bar[t]).sqrt() * eps_hat) / alpha_bar[t].sqrt()).clamp(-1, 1)
    eps_implied = (x_t - alpha_bar[t].sqrt() * x0_hat) / (1 - alpha_bar[t]).sqrt()
    x_t2 = alpha_bar[t2].sqrt() * x0_hat + (1 - alpha_bar[t2]).sqrt() * eps_implied
    # ddim_sample with 2 steps: t = 999 -> t = 0, then t = 0 -> the clipped estimate at sigma 0
    x0_at_0 = ((x_t2 - (1 - alpha_bar[t2]).sqrt() * eps_hat) / alpha_bar[t2].sqrt()).clamp(-1, 1)
    out = ddim_sample(model, noise.float(), torch.tensor([0, 1]), steps=2)
    assert torch.allclose(out.double(), x0_at_0, atol=1e-3)


MODEL = {"size": 8, "channels": 1, "n_classes": 2}


def test_the_ddpm_sampler_makes_one_network_call_per_step():
    calls = []
    net = EpsDenoiser(8, base=8).eval()
    forward = net.net.forward
    net.net.forward = lambda *a: calls.append(1) or forward(*a)
    sample = OBJECTIVES["denoising"].sampler(net, {**MODEL, "formulation": "ddpm"}, steps=5)
    with torch.no_grad():
        assert sample(torch.randn(2, 64), torch.tensor([0, 1])).shape == (2, 1, 8, 8)
    assert len(calls) == 5


def test_schedule_shapes():
    s = sigma_schedule(5)
    assert s[0] == 80 and abs(s[-2] - 0.002) < 1e-9 and s[-1] == 0 and bool((s[:-1] > s[1:]).all())


def test_sample_cli_takes_steps_guidance_and_solver(diffusion_run, tmp_path):
    out = tmp_path / "s.h5"
    r = run_tool("sample.py", "--n", "3", "--ckpt", diffusion_run, "--out", out, "--steps", "3", "--guidance", "1.5",
                 "--solver", "dpm++2m", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    info = read_info(out, (SAMPLES_SCHEMA,))
    assert info.attrs["sampler"] == {"steps": 3, "guidance": 1.5, "solver": "dpm++2m"}
    assert info.attrs["recipe"] == ["diffusion"]
    assert H5ImageDataset(out, "synthetic").read_uint8(range(6)).shape == (6, 32, 32)
    for bad in (["--guidance", "-1"], ["--solver", "rk4"]):
        r = run_tool("sample.py", "--n", "3", "--ckpt", diffusion_run, "--out", tmp_path / "x.h5", *bad)
        assert r.returncode == 2 and bad[0] in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "x.h5").exists()


class GaussianDenoiser:
    """The exact denoiser of data drawn from N(0, sd^2): D(x; sigma) = x sd^2 / (sd^2 + sigma^2). Its
    probability-flow ODE has the closed-form solution x(sigma) = x(sigma_0) sqrt(sd^2 + sigma^2) / sqrt(sd^2 +
    sigma_0^2), which the solvers are checked against."""

    n_classes = 2

    def __init__(self, sd: float):
        self.sd = sd

    def __call__(self, x, sigma, labels):
        return x * self.sd ** 2 / (self.sd ** 2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_solvers_against_the_exact_ode_solution():
    """Heun and DPM-Solver++(2M) are second order (error falls about (100/40)^2 = 6x from 40 to 100 steps, Euler's
    about 2.5x), and DPM-Solver++(2M) at N steps (N calls) is as accurate as Heun at N steps (2N - 1 calls)."""
    sd, labels = 0.2, torch.zeros(4, dtype=torch.long)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def error(solver: str, steps: int) -> float:
        sigmas = sigma_schedule(steps)
        exact = noise.double() * sigmas[0] * sd / (sd ** 2 + sigmas[0] ** 2).sqrt()
        out = ode_sample(GaussianDenoiser(sd), noise, labels, sigmas, solver, 1.0)
        return float((out.double() - exact).abs().max() / exact.abs().max())

    errors = {solver: {steps: error(solver, steps) for steps in (18, 40, 100)} for solver in SOLVERS}
    for solver in ("heun", "dpm++2m"):
        assert errors[solver][40] / errors[solver][100] > 4.5, errors
        assert errors[solver][100] < 0.005, errors
    assert 1.8 < errors["euler"][40] / errors["euler"][100] < 3.5, errors
    for steps in (18, 40, 100):
        assert errors["dpm++2m"][steps] < 1.3 * errors["heun"][steps], errors
        assert errors["dpm++2m"][steps] < 0.6 * errors["euler"][steps], errors
    with pytest.raises(ValueError, match="unknown solver"):
        ode_sample(GaussianDenoiser(sd), noise, labels, sigma_schedule(3), "rk4", 1.0)


def test_dpm_solver_2m_takes_one_call_per_step_and_its_formula():
    """The first step is DDIM's; later ones extrapolate the denoised image linearly in -log(sigma) from the previous
    step's (by hand below); the last step to sigma 0 returns the denoised image itself."""
    calls = []

    class Recorder:  # the denoised image is 0.3 at the first call and -0.1 after
        n_classes = 2

        def __call__(self, x, sigma, labels):
            calls.append(float(sigma[0]))
            return torch.full_like(x, 0.3 if len(calls) == 1 else -0.1)

    noise, labels = torch.ones(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    out = ode_sample(Recorder(), noise, labels, torch.tensor([4.0, 2.0, 0.5, 0.0], dtype=torch.float64), "dpm++2m", 1)
    assert calls == [4.0, 2.0, 0.5] and torch.allclose(out, torch.full_like(out, -0.1))
    calls.clear()
    out = ode_sample(Recorder(), noise, labels, torch.tensor([4.0, 2.0, 0.5, 0.25], dtype=torch.float64), "dpm++2m",
                     1)
    x = 2 / 4 * 4.0 + (1 - 2 / 4) * 0.3  # 4 -> 2, first order from x = noise * 4
    h, r = math.log(2 / 0.5), math.log(4 / 2) / math.log(2 / 0.5)  # 2 -> 0.5: this step and the last one's ratio
    x = 0.5 / 2 * x + (1 - math.exp(-h)) * ((1 + 1 / (2 * r)) * -0.1 - 1 / (2 * r) * 0.3)
    x = 0.25 / 0.5 * x + (1 - 0.25 / 0.5) * -0.1  # 0.5 -> 0.25: equal denoised images, nothing to extrapolate
    assert torch.allclose(out.double(), torch.full((1, 1, 2, 2), x, dtype=torch.float64), atol=1e-6)


def test_ddpm_recipe_trains_and_samples_through_the_same_tools(phantoms, tmp_path):
    train(GanConfig(data=str(phantoms), out=str(tmp_path / "run"), recipe="diffusion-ddpm", epochs=1, **TINY))
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["model"]["kind"] == "ddpm" and saved["model"]["latent"] == 32 * 32
    r = run_tool("sample.py", "--n", "2", "--ckpt", tmp_path / "run", "--out", tmp_path / "s.h5", "--steps", "4",
                 "--device", "cpu")
    assert r.returncode == 0, r.stderr
    info = read_info(tmp_path / "s.h5", (SAMPLES_SCHEMA,))
    assert info.attrs["recipe"] == ["diffusion-ddpm"]
    assert info.attrs["sampler"] == {"steps": 4, "guidance": 1.0, "solver": "euler"}


def test_channels_last_sampling_matches_the_plain_layout():
    torch.manual_seed(0)
    net = Denoiser(16, base=8).eval()
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    z, y = torch.randn(4, 256), torch.tensor([0, 1, 0, 1])
    x, sigma = torch.randn(4, 1, 16, 16), torch.full((4,), 0.7)
    model = {"size": 16, "channels": 1, "n_classes": 2, "formulation": "edm"}
    with torch.no_grad():
        plain, plain_d = OBJECTIVES["denoising"].sampler(net, model, steps=3)(z, y), net(x, sigma, y)
        fast_sampler = OBJECTIVES["denoising"].sampler(net, model, steps=3, channels_last=True)
        fast, fast_d = fast_sampler(z, y), net(x.contiguous(memory_format=torch.channels_last), sigma, y)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain_d.std() > 0.1 and torch.allclose(plain_d, fast_d, atol=1e-4)  # unclamped denoiser outputs
    assert torch.allclose(plain, fast, atol=1e-3)


def _as_legacy(saved: dict) -> dict:
    """A checkpoint as cxrgan wrote it before the objectives table (format cxrgan-gan/1): the denoiser as a GAN's
    generator (under ``denoiser.``) beside an empty discriminator, and GAN options in its config."""
    prefixed = {f"denoiser.{k}": v for k, v in saved["networks"]["denoiser"].items()}
    ema = {f"denoiser.{k}": v for k, v in saved["ema"].items()}
    model = {k: v for k, v in saved["model"].items() if k != "formulation"}
    config = {**saved["config"], "loss": "denoising", "augment": "none", "lr_d": 2e-4, "g_steps": 1,
              "ada_target": None, "ada_kimg": 100, "r1_gamma": 0.0, "lecam": 0.0}
    rest = {k: v for k, v in saved.items() if k not in ("networks", "ema", "optimizers", "objective",
                                                         "objective_state", "format", "tensors_sha256")}
    return {**rest, "format": "cxrgan-gan/1", "model": model, "config": config, "generator": prefixed,
            "discriminator": {}, "ema": ema, "opt_g": saved["optimizers"]["denoiser"], "opt_d": None, "ada": None,
            "lecam": None}


def test_a_checkpoint_of_the_old_format_samples_and_resumes_as_before(diffusion_run, phantoms, tmp_path):
    from cxrgan import torchfile
    from cxrgan.errors import UserError
    from cxrgan.generative.checkpoint import load
    from cxrgan.generative.checkpoint import load_generator

    saved = torch.load(diffusion_run / "last.pt", weights_only=True)
    old_run = tmp_path / "old"
    old_run.mkdir()
    torchfile.save(_as_legacy(saved), old_run / "last.pt")
    upgraded = load(old_run / "last.pt")
    assert upgraded["objective"] == "denoising" and upgraded["model"]["formulation"] == "edm"
    new, old = load_generator(diffusion_run / "last.pt"), load_generator(old_run / "last.pt")
    z, y = torch.randn(2, new.model["latent"]), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(new.sampler(steps=2)(z, y), old.sampler(steps=2)(z, y))
    result = train(GanConfig(data=str(phantoms), out=str(old_run), recipe="diffusion", epochs=2, **TINY))
    assert result["trained"] and result["epochs"] == 2  # continued from the old file's epoch 1
    legacy_gan = {**_as_legacy(saved), "model": {**saved["model"], "kind": "resnet"}}
    torchfile.save(legacy_gan, tmp_path / "resnet.pt")
    with pytest.raises(UserError, match="'resnet' networks, which cxrgan no longer has"):
        load(tmp_path / "resnet.pt")
