"""What `make` would run (make -n, nothing built): every documented DATA=nih variable gives well-formed tool
commands, the defaults follow the study, and the CLI, the Makefile and the README name one default recipe."""

import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from check_make_commands import check
from cxrgan.classify.arms import ARMS
from cxrgan.metrics.networks import FEATURE_NETS
from conftest import ROOT
from cxrgan.data.ingest import IngestConfig, build_dataset
from cxrgan.generative.recipes import DEFAULT_RECIPE
from cxrgan.generative.train import GanConfig
from nih_release import write as write_release


def dry_run(tmp_path, *args) -> str:
    r = subprocess.run(["make", "--no-print-directory", "-n", *args, f"OUTPUTS={tmp_path}/outputs",
                        f"DATA_DIR={tmp_path}/data"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("args", [
    ["all", "DATA=nih"], ["all", "DATA=nih", "SPLIT=random"], ["all", "DATA=nih", "RECIPE=seed", "EPOCHS=40"],
    ["all", "DATA=nih", "RECIPE=diffusion", "SEEDS=5", "N_SYNTH=200"], ["all", "DATA=nih", "NPROC=4"],
    ["all", "DATA=nih", "XRV=1", "XRV_WEIGHTS=x.pt", "INCEPTION_WEIGHTS=i.pt"], ["all", "DATA=nih", "SYNTH_RATIO=0.5"],
    ["all", "DATA=nih", "CONTROLS=oversample", "CLF_EPOCHS=5", "CLF_SIZE=128", "SIZE=128", "KIMG=10"],
    ["efficiency", "DATA=nih"], ["efficiency", "DATA=nih", "REUSE_GAN=1"], ["tstr", "DATA=nih"], ["all"],
    ["all", "DATA=phantom"], ["efficiency"]])
def test_dry_runs_print_well_formed_tool_commands(tmp_path, args):
    n, problems = check(dry_run(tmp_path, *args))
    assert n >= 1 and problems == []


def test_data_nih_defaults_follow_the_study(tmp_path):
    text = dry_run(tmp_path, "all", "DATA=nih")
    assert "--official-split" in text and "--size 256" in text
    classifiers = [line for line in text.splitlines() if "train_resnet.py" in line]
    assert len(classifiers) == 4 and all("--epochs 20 --seeds 3" in line and "--size 224" in line
                                         for line in classifiers)
    added = [line for line in classifiers if "--control" in line or "--synthetic " in line]
    assert len(added) == 3 and all("--synthetic-per-class 500" in line for line in added)  # arms matched in count
    assert "--official-split" not in dry_run(tmp_path, "all", "DATA=nih", "SPLIT=random")
    assert "--synthetic-ratio 0.5" in dry_run(tmp_path, "all", "DATA=nih", "SYNTH_RATIO=0.5")
    assert "--synthetic-ratio 1 " in dry_run(tmp_path, "all")  # the laptop default: as many as the real images
    assert "torchrun --standalone --nproc_per_node=4 tools/train_dcgan.py" in dry_run(tmp_path, "all", "DATA=nih", "NPROC=4")
    r = subprocess.run(["make", "-n", "all", "DATA=nih", "SPLIT=lists"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "SPLIT must be official or random" in r.stderr


def test_an_empty_variable_or_unknown_option_is_caught():
    n, problems = check("x/.venv/bin/python tools/train_resnet.py --data d.h5 --epochs  --seeds 3 --colour red\n")
    assert n == 1 and problems == ["tools/train_resnet.py: --epochs has no value (an empty make variable?)",
                                   "tools/train_resnet.py: unknown option --colour"]
    assert check("python tools/train_dcgan.py --data d.h5 --kimg seven --noresume\n")[1] == [
        "tools/train_dcgan.py: --kimg 'seven' is not a float"]


def test_one_default_recipe_for_the_cli_the_makefile_and_the_readme(tmp_path):
    assert GanConfig(data="x").recipe == DEFAULT_RECIPE
    assert f"--recipe {DEFAULT_RECIPE}" in dry_run(tmp_path, "gan", "DATA=nih")
    assert f"`RECIPE={DEFAULT_RECIPE}` by default" in (ROOT / "README.md").read_text()
    doc = (ROOT / "tools" / "train_dcgan.py").read_text()
    assert re.search(rf'"{DEFAULT_RECIPE}" \(default', doc)


def test_the_nih_shaped_release_is_read_with_the_official_split(tmp_path):
    release = tmp_path / "nih"
    write_release(str(release), patients=16, side=256)
    assert sorted(p.name for p in release.glob("images_*.tar.gz")) == [f"images_{k:03d}.tar.gz" for k in range(1, 13)]
    test_names = set((release / "test_list.txt").read_text().split())
    out = tmp_path / "nih-32.h5"
    build_dataset(IngestConfig(src=str(release), out=str(out), size=32, official_split=True, workers=1))
    with h5py.File(out) as f:
        assert f.attrs["split_method"] == "official"
        names = {s: {n.decode() for n in f[s]["names"][:]} for s in ("train", "val", "test")}
        patients = {s: set(np.asarray(f[s]["patient_ids"][:]).tolist()) for s in ("train", "val", "test")}
    assert names["test"] and names["test"] <= test_names and not (names["train"] | names["val"]) & test_names
    assert not patients["train"] & patients["val"] and not (patients["train"] | patients["val"]) & patients["test"]


def test_the_metrics_and_control_arm_targets_come_from_the_tables(tmp_path):
    nets = [name for name, row in FEATURE_NETS.items() if not row.argument_required]
    variables = [f"{name.upper()}=1" for name in nets]
    text = dry_run(tmp_path, "all", "DATA=nih", *variables)
    for name in nets:
        assert f"--out {tmp_path}/outputs/metrics/{name}-{DEFAULT_RECIPE}.json" in text and f"--features {name}" in text
    controls = re.findall(r"--out \S+/classify/real\+(\S+) .*--control (\S+)", text)
    assert [arm for arm, _ in controls] == [arm for _, arm in controls] == list(ARMS)  # every arm, as CONTROLS
    laptop = re.findall(r"--control (\S+)", dry_run(tmp_path, "all"))
    assert laptop == [name for name, arm in ARMS.items() if arm.laptop]  # DATA=nih-mini: the laptop arms only
    curve = re.findall(r"fraction-0.5/real\+(\S+) .*--control (\S+)", dry_run(tmp_path, "efficiency", "FRACTIONS=0.5"))
    assert [arm for arm, _ in curve] == [name for name, arm in ARMS.items() if arm.efficiency]
    helptext = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert all(f"{v.split('=')[0]}=0|1 {v.split('=')[0]}_WEIGHTS" in helptext for v in variables)


def test_a_new_row_in_either_table_gives_its_make_targets(tmp_path):
    """A copy of the Makefile and the package with one more feature network and one more control arm: `make`
    plans their stages with no other change."""
    shutil.copytree(ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    with open(tmp_path / "lib" / "cxrgan" / "metrics" / "networks.py", "a") as f:
        f.write('\nFEATURE_NETS["tiny-net"] = FeatureNetRow(_lazy("tiny", "build"), False, "test only")\n')
    with open(tmp_path / "lib" / "cxrgan" / "classify" / "arms.py", "a") as f:
        f.write('\nARMS["inverted"] = Arm(_as_drawn, "real + inverted copies", "inversion", efficiency=True)\n')

    def plan(*args):
        return subprocess.run(["make", "--no-print-directory", "-n", *args, "OUTPUTS=out", "DATA_DIR=data"],
                              cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120).stdout

    text = plan("all", "DATA=nih", "TINY_NET=1", "TINY_NET_WEIGHTS=w.pt")
    assert "--out out/metrics/tiny-net-limited.json --seed 0 --device auto --features tiny-net:w.pt" in text
    assert "--out out/classify/real+inverted" in text and "--control inverted" in text
    assert "--baseline out/classify/real,out/classify/real+oversample,out/classify/real+augment," \
           "out/classify/real+inverted" in text  # the synthetic arm is paired with it too
    assert "tiny-net" not in plan("all", "DATA=nih")  # off unless asked for
    curve = plan("efficiency", "FRACTIONS=0.5")
    assert "--real-fraction 0.5 --control inverted" in curve
    assert "--baseline out/classify/fraction-0.5/real,out/classify/fraction-0.5/real+oversample," \
           "out/classify/fraction-0.5/real+inverted" in curve


def test_test_extra_reaches_every_classifier_arm(tmp_path):
    text = dry_run(tmp_path, "all", "TEST_EXTRA=ext.h5 other.h5:test")
    classifiers = [line for line in text.splitlines() if "train_resnet.py" in line]
    assert classifiers and all("--test-extra ext.h5 --test-extra other.h5:test" in line for line in classifiers)
    assert check(text)[1] == []
    assert "--test-extra" not in dry_run(tmp_path, "all")
