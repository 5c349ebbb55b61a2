"""Adaptive discriminator augmentation: the transforms, the controller of p, and p through training and resume."""

import csv

import pytest
import torch
import torch.nn.functional as F

from cxrgan.data.reader import H5ImageDataset, to_model_input
from cxrgan.errors import UserError
from cxrgan.generative.augment import AdaptiveP, ada_augment
from cxrgan.generative.dcgan import Discriminator
from cxrgan.generative.train import GanConfig, train

from conftest import TINY_GAN


def test_p_zero_is_the_identity_and_p_one_transforms_differentiably():
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    assert ada_augment(x, 0.0) is x
    x.requires_grad_(True)
    y = ada_augment(x, 1.0)
    y.sum().backward()
    assert y.shape == x.shape and not torch.allclose(y, x) and x.grad is not None and x.grad.abs().sum() > 0


def test_augmentation_keeps_laterality():
    x = -torch.ones(200, 1, 64, 64)
    x[..., :32] = 1.0  # bright image left, dark right: a flip would swap them
    torch.manual_seed(0)
    y = ada_augment(x, 1.0)
    assert (y[..., :32].mean(dim=(1, 2, 3)) > y[..., 32:].mean(dim=(1, 2, 3))).all()


def test_controller_moves_p_by_the_step_size_within_0_and_1():
    ada = AdaptiveP(target=0.6, ada_kimg=1, batch=10, interval=4)  # step 10 * 4 / 1000 = 0.04
    for _ in range(4):
        ada.observe(sign_sum=10, count=10)  # r_t = 1: sure of every real image
    assert ada.p == pytest.approx(0.04) and ada.last_rt == 1.0
    for _ in range(3):
        ada.observe(10, 10)
    assert ada.p == pytest.approx(0.04)  # mid-interval: unchanged
    state = ada.state_dict()
    again = AdaptiveP(0.6, 1, 10, 4)
    again.load_state_dict(state)
    for a in (ada, again):
        a.observe(-10, 10)  # r_t over the interval = (30 - 10) / 40 = 0.5 < 0.6: p goes down
    assert ada.p == again.p == pytest.approx(0.0)
    for _ in range(8):
        ada.observe(-10, 10)
    assert ada.p == 0.0  # never below 0


def test_p_rises_when_d_sees_copies_of_its_training_images_and_falls_on_fresh_ones(phantoms96):
    """A discriminator trained to tell 8 'training' images from other real images memorises them: fed copies of
    its training set, ADA's heuristic says overfitting (p up); fed fresh real images, it does not (p down)."""
    ds = H5ImageDataset(phantoms96, "train", in_memory=True)
    x = to_model_input(torch.from_numpy(ds.images))
    seen, fresh = x[:8], x[8:40]
    torch.manual_seed(0)
    D = Discriminator(32, base=8)
    opt = torch.optim.Adam(D.parameters(), 2e-3)
    for _ in range(150):
        loss = F.softplus(-D(seen)).mean() + F.softplus(D(fresh[:16])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    with torch.no_grad():
        up, down = AdaptiveP(0.6, 1, 8), AdaptiveP(0.6, 1, 8, p=0.5)
        for _ in range(8):
            up.observe(float(torch.sign(D(seen)).sum()), len(seen))
            down.observe(float(torch.sign(D(fresh[16:24])).sum()), 8)
    assert up.p > 0 and down.p < 0.5


def test_ada_in_training_logs_p_and_resumes_exactly(phantoms96, tmp_path):
    cfg = dict(data=str(phantoms96), recipe="improved", ada_target=0.6, ada_kimg=0.5, **TINY_GAN)
    train(GanConfig(out=str(tmp_path / "straight"), epochs=4, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), epochs=2, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), epochs=4, **cfg))
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["objective_state"]["ada"] == b["objective_state"]["ada"] and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    ps = [float(r["augment_p"]) for r in csv.DictReader(open(tmp_path / "straight" / "losses.csv"))]
    assert len(ps) == a["step"] and all(0 <= p <= 1 for p in ps) and ps[-1] == pytest.approx(a["objective_state"]["ada"]["p"])
    assert len(set(ps)) > 1  # p moved
    with pytest.raises(UserError, match="--ada-target"):
        GanConfig(data=str(phantoms96), ada_target=1.5).resolved()


def test_r1_is_the_squared_gradient_norm_at_real_images():
    from cxrgan.generative.adversarial import r1_penalty

    x = torch.randn(5, 1, 4, 4, requires_grad=True)
    w = torch.randn(1, 1, 4, 4)
    d = (x * w).sum(dim=(1, 2, 3)) + (x ** 2).sum(dim=(1, 2, 3))  # gradient: w + 2x
    expected = ((w + 2 * x.detach()) ** 2).sum(dim=(1, 2, 3)).mean()
    assert torch.allclose(r1_penalty(d, x), expected)


def test_lecam_penalises_real_above_the_fake_average_and_fake_below_the_real_average():
    from cxrgan.generative.adversarial import LeCam

    reg = LeCam(decay=0.5)
    d_real, d_fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    value = reg(d_real, d_fake)
    assert (reg.real, reg.fake) == (0.5, 0.0)  # 0.5 * 0 + 0.5 * mean
    expected = (torch.relu(d_real - 0.0) ** 2).mean() + (torch.relu(0.5 - d_fake) ** 2).mean()  # 4/2 + 2.25/2
    assert value.item() == pytest.approx(expected.item()) == pytest.approx(3.125)


def test_the_limited_recipe_trains_with_every_regulariser_and_resumes_exactly(phantoms96, tmp_path):
    cfg = dict(data=str(phantoms96), recipe="limited", base=8, r1_gamma=1.0, batch=8, grid=4, device="cpu")
    train(GanConfig(out=str(tmp_path / "straight"), epochs=3, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), epochs=1, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), epochs=3, **cfg))
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["model"]["kind"] == "cgan" and a["config"]["lecam"] == 0.3 and a["config"]["ada_target"] == 0.6
    assert a["objective_state"] == b["objective_state"]  # ADA's p and LeCam's averages
    assert all(torch.equal(a["networks"]["generator"][k], b["networks"]["generator"][k])
               for k in a["networks"]["generator"])
