"""A generative family is a row of the objectives table and its module: a test-only objective (a generator fitted
to the batch's mean and spread, no discriminator), registered with monkeypatch, trains through train_dcgan's loop
with its own loss columns, snapshot column and checkpointed state, resumes exactly, and samples through sample.py."""

import csv
import sys
from dataclasses import dataclass

import torch

from cxrgan.data.datasetfile import SAMPLES_SCHEMA, read_info
from cxrgan.generative.dcgan import Generator
from cxrgan.generative.networks import NETWORKS
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.recipes import RECIPES, Recipe
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import sample as sample_tool  # noqa: E402
import train_dcgan  # noqa: E402


@dataclass(frozen=True)
class Moments:
    objective = "moments"
    options = ()
    spread_weight: float = 1.0


class MomentsStep:
    def __init__(self, cfg, rt, G, opt, settings, state):
        self.cfg, self.rt, self.G, self.opt, self.settings = cfg, rt, G, opt, settings
        self.steps = (state or {}).get("steps", 0)

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def __call__(self, real, y, step):
        fake = self.G(torch.randn(len(real), self.cfg.latent), y)
        loss = (fake.mean() - real.mean()) ** 2 + self.settings.spread_weight * (fake.std() - real.std()) ** 2
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return {"loss": loss.item()}


class MomentsObjective:
    name, sampled = "moments", "generator"
    loss_columns, snapshot_columns = ("loss", "img_per_s", "seconds"), ("mean_level",)
    sample_options = ("truncation",)  # a latent-space generator, like a GAN

    def latent(self, cfg, size):
        return cfg.latent

    def model_extras(self, settings):
        return {}

    def learning_rates(self, cfg):
        return {"generator": cfg.lr_g}

    def optimizers(self, cfg, modules):
        return {"generator": torch.optim.Adam(modules["generator"].parameters(), lr=cfg.lr_g,
                                                    betas=(cfg.beta1, cfg.beta2))}

    def step(self, cfg, rt, modules, trained, optimizers, per_rank, state, model, settings):
        return MomentsStep(cfg, rt, trained["generator"], optimizers["generator"], settings, state)

    def sampler(self, network, model, steps=None, guidance=1.0, solver=None, channels_last=False):
        return lambda z, y: network(z, y)

    def sampler_record(self, network, model, steps, guidance, solver):
        return None

    def snapshot(self, snapshots, modules, fake, channels):
        return {"mean_level": float(fake.mean())}


def register(monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "moments", MomentsObjective())
    monkeypatch.setitem(NETWORKS, "generator-only", {"generator": Generator})
    monkeypatch.setitem(RECIPES, "moments", Recipe(networks="generator-only", conditional=False, ema_kimg=0.0,
                                                   epochs=2, lr_g=1e-3, beta1=0.5, beta2=0.999,
                                                   settings=Moments()))


def test_a_test_only_objective_trains_resumes_and_samples_through_the_tools(phantoms, tmp_path, monkeypatch):
    register(monkeypatch)
    common = dict(data=str(phantoms), recipe="moments", cls=1, batch=8, base=8, grid=4, device="cpu",
                  snapshot_kimg=0.01, snapshot_n=16)
    train_dcgan.main(out=str(tmp_path / "straight"), **common)
    train_dcgan.main(out=str(tmp_path / "resumed"), epochs=1, **common)
    train_dcgan.main(out=str(tmp_path / "resumed"), **common)
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("straight", "resumed"))
    assert a["objective"] == "moments" and list(a["networks"]) == list(a["optimizers"]) == ["generator"]
    assert a["epoch"] == b["epoch"] == 2 and a["objective_state"] == b["objective_state"] == {"steps": a["step"]}
    assert all(torch.equal(a["networks"]["generator"][k], b["networks"]["generator"][k])
               for k in a["networks"]["generator"])
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "losses.csv")))
    assert list(rows[0]) == ["epoch", "step", "kimg", "loss", "img_per_s", "seconds"] and len(rows) == a["step"]
    snapshot = list(csv.DictReader(open(tmp_path / "straight" / "metrics.csv")))
    assert "mean_level" in snapshot[0] and "d_train" not in snapshot[0] and snapshot[-1]["mean_level"] != ""

    out = tmp_path / "samples.h5"
    sample_tool.main(n=5, cls=1, ckpt=str(tmp_path / "straight"), out=str(out), device="cpu")
    info = read_info(out, (SAMPLES_SCHEMA,))
    assert info.attrs["recipe"] == ["moments"] and info.attrs["sampler"] == "none"
    assert info.attrs["counts"]["synthetic"] == {"No Finding": 0, "Infiltration": 5}
