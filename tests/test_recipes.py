"""The recipe table: a recipe is one row (generative/recipes.py), and nothing else in the library looks at its name."""

import ast
import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrgan.data.reader import H5ImageDataset
from cxrgan.generative import recipes
from cxrgan.generative.checkpoint import load_generator
from cxrgan.generative.adversarial import LOSSES
from cxrgan.generative.diffusion import FORMULATIONS
from cxrgan.generative.networks import NETWORKS
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.recipes import RECIPES, Adversarial, Recipe
from cxrgan.generative.sample import sample_to_file
from cxrgan.generative.train import GanConfig, train
from conftest import ROOT

# A recipe that exists only in this test: conditional networks, BCE, translation only, a short EMA, its own
# learning rates. Registering it is the one change needed to train and sample it.
TINY = Recipe(networks="cgan", conditional=True, ema_kimg=0.01, epochs=1, lr_g=1e-3, beta1=0.5, beta2=0.9,
              settings=Adversarial(loss="bce", augment="translation", lr_d=5e-4, g_steps=1))



def test_a_test_only_recipe_registered_in_the_table_trains_one_step_and_samples(phantoms, tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "tiny", TINY)
    n_train = len(H5ImageDataset(phantoms, "train"))
    out = tmp_path / "tiny"
    result = train(GanConfig(data=str(phantoms), out=str(out), recipe="tiny", batch=n_train, base=8, grid=4,
                             device="cpu"))
    assert result["trained"] and result["epochs"] == 1 and result["step"] == 1  # the row's epochs; one step
    saved = torch.load(out / "last.pt", weights_only=True)
    cfg = saved["config"]
    assert (cfg["recipe"], cfg["loss"], cfg["augment"], cfg["lr_g"], cfg["lr_d"], cfg["beta1"], cfg["ema_kimg"]) == \
        ("tiny", "bce", "translation", 1e-3, 5e-4, 0.5, 0.01)  # every unset option came from the row
    assert saved["model"]["kind"] == "cgan" and saved["objective"] == "adversarial" and saved["ema"] is not None
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss_d"]))
    g = load_generator(out / "last.pt")
    assert g.recipe == "tiny" and g.classes_covered == [0, 1] and g.weights == "ema"
    attrs = sample_to_file(tmp_path / "s.h5", {0: g, 1: g}, n=3, seed=0, device="cpu")
    assert attrs["recipe"] == ["tiny"] and attrs["counts"]["synthetic"] == {"No Finding": 3, "Infiltration": 3}


def test_a_per_class_row_requires_cls(phantoms, tmp_path, monkeypatch):
    from cxrgan.errors import UserError
    monkeypatch.setitem(RECIPES, "tiny-per-class", dataclasses.replace(TINY, networks="dcgan", conditional=False))
    with pytest.raises(UserError, match="--recipe tiny-per-class trains one model per class"):
        GanConfig(data=str(phantoms), recipe="tiny-per-class").resolved()


def test_every_row_names_known_networks_objective_and_settings():
    for name, r in RECIPES.items():
        assert r.networks in NETWORKS and r.objective in OBJECTIVES, name
        assert OBJECTIVES[r.objective].sampled in NETWORKS[r.networks], name  # its networks have the part it samples
        if r.objective == "adversarial":
            assert r.settings.loss in LOSSES and set(NETWORKS[r.networks]) == {"generator", "discriminator"}, name
        else:
            assert r.settings.formulation in FORMULATIONS, name


def _comparisons_with_recipe_names(path: Path) -> list[str]:
    """``x == "improved"``, ``x in ("seed", ...)`` and the like: code that branches on a recipe's name."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Compare, ast.Match)):
            names = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in RECIPES]
            hits += [f"{path.name}:{node.lineno} {v!r}" for v in names]
    return hits


def test_nothing_outside_the_table_branches_on_a_recipe_name():
    lib = ROOT / "lib" / "cxrgan"
    found = [hit for p in sorted(lib.rglob("*.py")) if p != Path(recipes.__file__)
             for hit in _comparisons_with_recipe_names(p)]
    assert found == []


def test_the_makefile_reads_the_table(monkeypatch):
    monkeypatch.setitem(RECIPES, "tiny", TINY)
    assert recipes.make_table().split() == ["study-dcgan:per-class", "improved:conditional",
                                            "limited:conditional:default", "laptop:conditional:laptop",
                                            "diffusion:conditional",
                                            "diffusion-ddpm:conditional", "tiny:conditional", "seed:per-class"]
    # DATA=nih-mini (the laptop run) trains the laptop recipe for its own length; other data the default recipe
    laptop = subprocess.run(["make", "-n", "gan"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"--recipe {recipes.LAPTOP_RECIPE}" in laptop and "--kimg" not in laptop
    assert "--kimg 7 " in subprocess.run(["make", "-n", "gan", "RECIPE=limited"], cwd=ROOT, capture_output=True,
                                         text=True, check=True).stdout
    assert f"--recipe {recipes.DEFAULT_RECIPE}" in subprocess.run(
        ["make", "-n", "gan", "DATA=phantom"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    out = subprocess.run(["make", "-n", "gan", "RECIPE=seed"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "--recipe seed --cls 0" in out.stdout and "--recipe seed --cls 1" in out.stdout
    bad = subprocess.run(["make", "-n", "gan", "RECIPE=nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "RECIPE must be one of study-dcgan improved limited" in bad.stderr


def test_make_efficiency_retrains_the_gan_per_fraction_unless_told_to_reuse():
    def dry(*args):
        return subprocess.run(["make", "-n", "efficiency", "FRACTIONS=0.25 1", "SEEDS=2", "RECIPE=limited", *args],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout

    plan = dry()
    assert "--recipe limited --real-fraction 0.25" in plan  # a GAN on 25% of the patients only
    assert "--synthetic outputs/fraction-0.25/synthetic-limited.h5" in plan
    assert "--real-fraction 0.25 --control oversample" in plan
    assert "--baseline outputs/classify/fraction-0.25/real,outputs/classify/fraction-0.25/real+oversample" in plan
    assert "--real-fraction 1 --synthetic outputs/synthetic-limited.h5" in plan  # all patients: the main GAN
    reuse = dry("REUSE_GAN=1")
    assert "--real-fraction 0.25 --synthetic outputs/synthetic-limited.h5" in reuse
    assert "--recipe limited --real-fraction" not in reuse
    per_class = dry("RECIPE=seed")
    assert "--recipe seed --cls 0 --real-fraction 0.25" in per_class


def test_the_help_lists_every_recipe_of_the_table_with_its_base():
    from cxrgan.generative.recipes import DEFAULT_RECIPE
    from cxrgan.generative.train import OPTIONS_HELP

    help_text = " ".join(OPTIONS_HELP.split())
    recipe_help = help_text[help_text.index("recipe: "):help_text.index(" cls: ")]
    assert all(name in recipe_help for name in RECIPES) and f"{DEFAULT_RECIPE} (the default)" in recipe_help
    assert "seed is study-dcgan's old name" in recipe_help
    assert all(f"{name} {r.base}" in help_text for name, r in RECIPES.items())
    lr_d_help = help_text[help_text.index("lr_d: "):help_text.index(" beta1: ")]
    for name, r in RECIPES.items():  # a diffusion recipe has no discriminator
        assert (f"{name} {r.settings.lr_d}" in lr_d_help) if r.objective == "adversarial" else name not in lr_d_help


def test_the_tool_help_lists_every_recipe():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train_dcgan.py"), "--help"], capture_output=True,
                       text=True, env={**os.environ, "PAGER": "cat"})
    shown = r.stdout + r.stderr  # (fire writes the help to stderr when it is not a terminal)
    assert r.returncode == 0 and all(name in shown for name in RECIPES), shown[-2000:]
