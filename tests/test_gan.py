"""GAN training and sampling on tiny phantoms (32x32, narrow networks, a few steps)."""

import csv
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import cxrgan.generative.adversarial as adversarial
from cxrgan.data.datasetfile import SAMPLES_SCHEMA, read_info
from cxrgan.errors import UserError
from cxrgan.generative.train import GanConfig, train
from cxrgan.data.reader import H5ImageDataset
from conftest import ROOT, TINY_GAN, kill_9_then_rerun, run_tool


def weights(saved: dict) -> dict:
    """A checkpoint's weights by part, with its EMA as "ema" when it has one."""
    return {**saved["networks"], **({"ema": saved["ema"]} if saved.get("ema") is not None else {})}




def _weights(path):
    saved = torch.load(path, weights_only=True)
    return saved


@pytest.mark.parametrize("recipe,cls", [("study-dcgan", 1), ("improved", None)])
def test_both_recipes_train_and_write_everything(phantoms, tmp_path, recipe, cls):
    out = tmp_path / recipe
    result = train(GanConfig(data=str(phantoms), out=str(out), recipe=recipe, cls=cls, epochs=2, **TINY_GAN))
    assert result["epochs"] == 2 and result["trained"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ckpt-000001.pt", "ckpt-000002.pt", "grid-000001.png", "grid-000002.png", "last.pt",
                     "losses.csv", "losses.png", "summary.json"]
    saved = _weights(out / "last.pt")
    assert saved["epoch"] == 2 and saved["config"]["recipe"] == recipe and saved["dataset"]["size"] == 32
    assert (saved["ema"] is not None) == (recipe == "improved")
    assert saved["config"]["g_steps"] == (2 if recipe == "study-dcgan" else 1)
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert len(rows) == result["step"] and all(np.isfinite(float(r["loss_d"])) for r in rows)
    n_train = saved["dataset"]["n_train"]
    assert result["step"] == 2 * (n_train // 8)


def test_keep_prunes_old_checkpoints(phantoms, tmp_path):
    train(GanConfig(data=str(phantoms), out=str(tmp_path), recipe="seed", cls=0, epochs=3, keep=1, **TINY_GAN))
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ckpt-000003.pt", "last.pt"]


@pytest.mark.parametrize("recipe,cls", [("study-dcgan", 0), ("improved", None)])
def test_resume_gives_identical_weights(phantoms, tmp_path, recipe, cls):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train(GanConfig(data=str(phantoms), out=str(straight), recipe=recipe, cls=cls, epochs=2, **TINY_GAN))
    train(GanConfig(data=str(phantoms), out=str(resumed), recipe=recipe, cls=cls, epochs=1, **TINY_GAN))
    train(GanConfig(data=str(phantoms), out=str(resumed), recipe=recipe, cls=cls, epochs=2, **TINY_GAN))
    a, b = _weights(straight / "last.pt"), _weights(resumed / "last.pt")
    for key in ("generator", "discriminator") + (("ema",) if recipe == "improved" else ()):
        for name in weights(a)[key]:
            assert torch.equal(weights(a)[key][name], weights(b)[key][name]), (key, name)
    assert a["optimizers"]["generator"]["state"][0]["exp_avg"].equal(
        b["optimizers"]["generator"]["state"][0]["exp_avg"])
    rows = list(csv.DictReader(open(resumed / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, a["step"] + 1))


def test_finished_run_is_a_no_op_and_incompatible_resume_is_refused(phantoms, tmp_path):
    cfg = dict(data=str(phantoms), out=str(tmp_path), recipe="seed", cls=0, epochs=1, **TINY_GAN)
    train(GanConfig(**cfg))
    mtime = (tmp_path / "last.pt").stat().st_mtime_ns
    assert not train(GanConfig(**cfg))["trained"] and (tmp_path / "last.pt").stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="--cls 0"):
        train(GanConfig(**{**cfg, "cls": 1, "epochs": 2}))
    with pytest.raises(UserError, match="holds an earlier run"):  # starting over deletes it: only when asked
        train(GanConfig(**{**cfg, "cls": 1, "resume": False}))
    assert _weights(tmp_path / "last.pt")["config"]["cls"] == 0
    train(GanConfig(**{**cfg, "cls": 1, "resume": False, "overwrite": True}))
    assert _weights(tmp_path / "last.pt")["config"]["cls"] == 1


def test_resuming_applies_the_new_learning_rates_it_records(phantoms, tmp_path):
    cfg = dict(data=str(phantoms), out=str(tmp_path), recipe="improved", epochs=1, **TINY_GAN)
    train(GanConfig(**cfg))
    train(GanConfig(**{**cfg, "epochs": 2, "lr_g": 1e-5, "lr_d": 3e-5, "beta2": 0.9}))
    saved = _weights(tmp_path / "last.pt")
    assert saved["config"]["lr_g"] == 1e-5 and saved["config"]["lr_d"] == 3e-5
    assert [g["lr"] for g in saved["optimizers"]["generator"]["param_groups"]] == [1e-5]  # trained with what it records
    assert [g["lr"] for g in saved["optimizers"]["discriminator"]["param_groups"]] == [3e-5]
    assert saved["optimizers"]["generator"]["param_groups"][0]["betas"][1] == 0.9


def test_with_overwrite_a_run_with_other_settings_starts_over_and_an_interrupted_one_resumes(phantoms, tmp_path):
    cfg = dict(data=str(phantoms), out=str(tmp_path), recipe="improved", epochs=1, overwrite=True, **TINY_GAN)
    train(GanConfig(**cfg))
    first = _weights(tmp_path / "last.pt")
    assert not train(GanConfig(**cfg))["trained"]  # same settings: finished, nothing to do
    result = train(GanConfig(**{**cfg, "seed": 1}))  # another seed shapes the result: a fresh run
    assert result["trained"] and result["epochs"] == 1
    again = _weights(tmp_path / "last.pt")
    name = next(iter(first["networks"]["generator"]))
    assert again["config"]["seed"] == 1 and not torch.equal(weights(again)["generator"][name],
                                                            weights(first)["generator"][name])


def test_a_class_without_training_images_is_refused_not_sampled(tmp_path):
    from cxrgan.data.datasetfile import write_dataset
    path = tmp_path / "one-class.h5"
    rng = np.random.default_rng(0)
    with write_dataset(path, 32, ["No Finding", "Infiltration"], {"train": 16, "val": 4, "test": 4}) as w:
        # patients 0.., 100.., 200..: none crosses splits (hash() of a str changes per process)
        for base, (split, n) in enumerate((("train", 16), ("val", 4), ("test", 4))):
            for i in range(n):  # train: class 0 only
                w.add(split, 0 if split == "train" else i % 2, f"{split}{i}.png",
                      rng.integers(0, 256, (32, 32), dtype=np.uint8), patient_id=100 * base + i)
        w.close(seed=0)
    with pytest.raises(UserError, match="no training images of class 'Infiltration'"):
        train(GanConfig(data=str(path), out=str(tmp_path / "g"), recipe="improved", epochs=1, **TINY_GAN))
    train(GanConfig(data=str(path), out=str(tmp_path / "g0"), recipe="seed", cls=0, epochs=1, **TINY_GAN))
    with pytest.raises(UserError, match="no training images of class 'Infiltration'"):
        train(GanConfig(data=str(path), out=str(tmp_path / "g1"), recipe="seed", cls=1, epochs=1, **TINY_GAN))


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_checkpoint(phantoms, tmp_path, monkeypatch):
    cfg = dict(data=str(phantoms), out=str(tmp_path), recipe="improved", epochs=1, **TINY_GAN)
    train(GanConfig(**cfg))
    good = (tmp_path / "last.pt").read_bytes()
    nan_hinge = adversarial.Loss(lambda r, f: (r.mean() + f.mean()) * float("nan"),
                                 adversarial.LOSSES["hinge"].generator)
    monkeypatch.setitem(adversarial.LOSSES, "hinge", nan_hinge)
    with pytest.raises(UserError, match="non-finite loss at epoch 2"):
        train(GanConfig(**{**cfg, "epochs": 2}))
    assert (tmp_path / "last.pt").read_bytes() == good and not (tmp_path / "ckpt-000002.pt").exists()


def test_kill_9_mid_run_then_resume_finishes(phantoms, tmp_path):
    args = [sys.executable, str(ROOT / "tools/train_dcgan.py"), "--data", phantoms, "--out", tmp_path,
            "--recipe", "seed", "--cls", "1", "--epochs", "6", "--batch", "8", "--base", "8", "--grid", "4",
            "--device", "cpu"]
    r = kill_9_then_rerun(args, tmp_path / "ckpt-000002.pt")
    assert r.returncode == 0, r.stderr
    saved = _weights(tmp_path / "last.pt")
    assert saved["epoch"] == 6
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "losses.csv"))]
    assert steps == list(range(1, saved["step"] + 1))  # no duplicated or missing rows


@pytest.mark.parametrize("killed_after", ["ckpt-000001.pt", "ckpt-000003.pt"])  # no last.pt yet; the last epoch
def test_kill_9_between_the_epoch_checkpoint_and_last_pt_resumes_bit_identically(phantoms, tmp_path, killed_after):
    """The process dies at the instant after ckpt-EEEEEE.pt is written and before last.pt (fault injection, not
    timing luck); the same command, --overwrite included as make passes it, continues from that checkpoint."""
    from cxrgan.faults import KILL_AT

    def command(out):
        return [sys.executable, str(ROOT / "tools/train_dcgan.py"), "--data", phantoms, "--out", out, "--recipe",
                "improved", "--epochs", "3", "--overwrite", *[str(v) for k, v in TINY_GAN.items() for v in
                                                              (f"--{k}", v)]]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(GanConfig(data=str(phantoms), out=str(straight), recipe="improved", epochs=3, **TINY_GAN))
    r = subprocess.run(command(killed), cwd=ROOT, capture_output=True,
                       env={**os.environ, KILL_AT: f"wrote:{killed_after}"})
    assert r.returncode == -9  # SIGKILL
    epoch = int(killed_after[5:11])
    assert (killed / killed_after).is_file()
    assert not (killed / "last.pt").exists() if epoch == 1 else _weights(killed / "last.pt")["epoch"] == epoch - 1
    r = subprocess.run(command(killed), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    said = "".join((r.stdout + r.stderr).split())  # rich wraps long paths
    assert f"resuming{killed / killed_after}atepoch{epoch}" in said
    assert (killed / "summary.json").is_file()  # finished, as make checks
    a, b = _weights(straight / "last.pt"), _weights(killed / "last.pt")
    for key in ("generator", "discriminator", "ema"):
        for name in weights(a)[key]:
            assert torch.equal(weights(a)[key][name], weights(b)[key][name]), (key, name)
    steps = [int(row["step"]) for row in csv.DictReader(open(killed / "losses.csv"))]
    assert steps == list(range(1, a["step"] + 1))


def test_a_damaged_last_pt_is_passed_over_for_the_newest_epoch_checkpoint_that_loads(phantoms, tmp_path):
    cfg = dict(data=str(phantoms), out=str(tmp_path), recipe="seed", cls=0, **TINY_GAN)
    train(GanConfig(**cfg, epochs=2))
    (tmp_path / "last.pt").write_bytes(b"")  # as if damaged on disk; ckpt-000002.pt holds the same epoch
    result = train(GanConfig(**cfg, epochs=3))
    assert result["trained"] and _weights(tmp_path / "last.pt")["epoch"] == 3
    for name in ("last.pt", "ckpt-000003.pt", "ckpt-000002.pt", "ckpt-000001.pt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match="holds no checkpoint that loads"):  # never started over unless asked
        train(GanConfig(**cfg, epochs=4))
    assert train(GanConfig(**cfg, epochs=1, overwrite=True))["trained"]


def test_three_channel_seed_model_samples_gray(phantoms, tmp_path):
    train(GanConfig(data=str(phantoms), out=str(tmp_path / "g"), recipe="seed", cls=0, epochs=1, channels=3, **TINY_GAN))
    r = run_tool("sample.py", "--n", "3", "--cls", "0", "--root", tmp_path / "g", "--out", tmp_path / "s.h5")
    assert r.returncode == 0, r.stderr
    assert H5ImageDataset(tmp_path / "s.h5", "synthetic")[0][0].shape == (1, 32, 32)


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    train(GanConfig(data=str(phantoms), out=str(root / "improved"), recipe="improved", epochs=1, **TINY_GAN))
    return root


def test_sample_writes_n_per_class_in_the_contract(trained, phantoms, tmp_path):
    out = tmp_path / "s.h5"
    r = run_tool("sample.py", "--n", "7", "--root", trained, "--out", out, "--png", tmp_path / "png", "--seed", "3")
    assert r.returncode == 0, r.stderr
    info = read_info(out, (SAMPLES_SCHEMA,))
    assert info.splits == ["synthetic"] and info.counts == {"synthetic": {"No Finding": 7, "Infiltration": 7}}
    assert info.attrs["weights"] == ["ema"] and len(info.attrs["checkpoint_sha256"][0]) == 64
    assert info.attrs["training_data"] == [{"content_sha256": read_info(phantoms).attrs["content_sha256"],
                                            "split": "train", "real_fraction": 1.0, "subset_seed": 0,
                                            "path": str(phantoms.resolve())}]
    with h5py.File(out) as f:
        g = f["synthetic"]
        assert "patient_ids" not in g and g["images"].shape == (14, 32, 32) and g["labels"][:].tolist() == [0] * 7 + [1] * 7
        first = g["images"][:]
    assert len(list((tmp_path / "png").rglob("*.png"))) == 14
    r = run_tool("sample.py", "--n", "7", "--root", trained, "--out", tmp_path / "t.h5", "--seed", "3")
    with h5py.File(tmp_path / "t.h5") as f:
        assert np.array_equal(f["synthetic/images"][:], first)  # same seed, same images


def test_sample_errors(trained, tmp_path):
    r = run_tool("sample.py", "--n", "0", "--root", trained, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "--n" in r.stderr
    r = run_tool("sample.py", "--root", tmp_path / "empty", "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "no checkpoint found under" in r.stderr and "train" in r.stderr
    r = run_tool("sample.py", "--cls", "5", "--root", trained, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "class 5" in r.stderr
    assert not (tmp_path / "x.h5").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cxrgan-pwned",))


def test_malicious_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "last.pt"
    torch.save({"format": "cxrgan-gan/1", "evil": Payload()}, bad)
    r = run_tool("sample.py", "--ckpt", bad, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "refusing to load" in r.stderr
    assert not os.path.exists("/tmp/cxrgan-pwned")


def test_seed_recipe_needs_a_class(phantoms, tmp_path):
    r = run_tool("train_dcgan.py", "--data", phantoms, "--out", tmp_path, "--recipe", "seed")
    assert r.returncode == 2 and "--cls" in r.stderr


@pytest.mark.parametrize("recipe, port", [("limited", 29517), ("diffusion", 29518)])
def test_two_process_gloo_ddp(phantoms, tmp_path, recipe, port):
    """torchrun trains both kinds of model the training loop knows: a GAN and the diffusion U-Net."""
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        str(ROOT / "tools/train_dcgan.py"), "--data", str(phantoms), "--out", str(tmp_path),
                        "--recipe", recipe, "--epochs", "2", "--batch", "8", "--base", "8", "--grid", "4",
                        "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    saved = _weights(tmp_path / "last.pt")
    assert saved["world"] == 2 and saved["epoch"] == 2 and len(saved["rng"]) == 2
    assert saved["step"] == 2 * ((saved["dataset"]["n_train"] // 2) // 4)


def test_real_fraction_trains_on_the_classifiers_patients_and_the_samples_say_so(phantoms96, tmp_path):
    from cxrgan.classify.provenance import sees_more_real_data
    from cxrgan.data.splits import patient_fraction
    out = tmp_path / "half"
    train(GanConfig(data=str(phantoms96), out=str(out), recipe="improved", epochs=1, real_fraction=0.5, **TINY_GAN))
    saved = torch.load(out / "last.pt", weights_only=True)
    ds = H5ImageDataset(phantoms96, "train")
    assert saved["dataset"]["n_train"] == len(patient_fraction(ds.labels, ds.patient_ids, 0.5, 0)) < len(ds)
    assert saved["dataset"]["real_fraction"] == 0.5
    r = run_tool("sample.py", "--n", "4", "--ckpt", out, "--out", tmp_path / "s.h5", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    gan = read_info(tmp_path / "s.h5", (SAMPLES_SCHEMA,)).attrs["training_data"][0]
    assert (gan["real_fraction"], gan["subset_seed"]) == (0.5, 0)
    assert not sees_more_real_data(gan, 0.5, 0) and not sees_more_real_data(gan, 1.0, 0)
    assert sees_more_real_data(gan, 0.25, 0) and sees_more_real_data(gan, 0.5, 1)
    with pytest.raises(UserError, match="--real-fraction"):
        train(GanConfig(data=str(phantoms96), out=str(out), recipe="improved", epochs=2, **TINY_GAN))  # not resumable
    # a fraction smaller than a batch still trains, as long in images shown as the full split's epochs
    tiny = tmp_path / "tiny"
    train(GanConfig(data=str(phantoms96), out=str(tiny), recipe="improved", epochs=1, real_fraction=0.05, **TINY_GAN))
    saved = torch.load(tiny / "last.pt", weights_only=True)
    assert saved["config"]["batch"] == saved["dataset"]["n_train"] < TINY_GAN["batch"]
    assert saved["nimg"] >= len(ds) and saved["config"]["kimg"] == len(ds) / 1000


def test_sampling_refuses_a_class_its_checkpoint_never_saw(trained, tmp_path):
    from cxrgan import torchfile
    from cxrgan.generative.sample import resolve_generators

    saved = torch.load(trained / "improved" / "last.pt", weights_only=True)
    saved["dataset"]["class_counts"] = [saved["dataset"]["n_train"], 0]
    torchfile.save(saved, tmp_path / "last.pt")
    assert resolve_generators(str(tmp_path / "last.pt"), tmp_path, [0], "cpu")[0].classes_covered == [0]
    with pytest.raises(UserError, match="none was trained on images of it"):
        resolve_generators(str(tmp_path / "last.pt"), tmp_path, [0, 1], "cpu")


def test_a_checkpoint_edited_after_writing_is_refused(trained, tmp_path):
    from cxrgan import torchfile

    saved = torch.load(trained / "improved" / "last.pt", weights_only=True)
    name = next(iter(saved["networks"]["generator"]))
    saved["networks"]["generator"][name] = saved["networks"]["generator"][name] + 1e-3  # one weight changed, the stored digest kept
    torch.save(saved, tmp_path / "edited.pt")
    with pytest.raises(UserError, match="modified after it was written"):
        torchfile.load(tmp_path / "edited.pt")
    assert torchfile.tensors_digest(saved) != saved[torchfile.TENSORS_DIGEST]


def test_bf16_autocast_on_the_cpu_only_when_asked(phantoms, tmp_path, monkeypatch):
    from cxrgan import runtime
    assert not torch.is_autocast_enabled("cpu")
    with runtime.setup("cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")  # the CPU default: float32, bit-reproducible
    with runtime.setup("cpu", precision="bf16").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    seen = []
    original = runtime.Runtime.autocast

    def spy(self):
        seen.append(self.precision)
        return original(self)

    monkeypatch.setattr(runtime.Runtime, "autocast", spy)
    result = train(GanConfig(data=str(phantoms), out=str(tmp_path), recipe="limited", epochs=1, precision="bf16",
                             **TINY_GAN))
    assert result["trained"] and set(seen) == {"bf16"}
    saved = _weights(tmp_path / "last.pt")
    assert saved["config"]["precision"] == "bf16"
    assert all(torch.isfinite(w).all() for w in saved["networks"]["generator"].values() if w.is_floating_point())
    with pytest.raises(UserError, match="--precision must be auto, bf16, fp32"):
        GanConfig(data=str(phantoms), out=str(tmp_path / "x"), precision="fp16").resolved()


def test_balance_draws_each_class_equally_often(phantoms, tmp_path, monkeypatch):
    """--balance: an epoch's draws are half of each class even when the data holds 3 of one per 1 of the other;
    without it, every image once; the run records it and refuses to continue with the other setting."""
    import types

    import cxrgan.generative.train as gan_train

    labels = torch.tensor([0] * 300 + [1] * 100)
    run = types.SimpleNamespace(data=types.SimpleNamespace(images=torch.zeros(400, 1), labels=labels),
                                cfg=types.SimpleNamespace(balance=True), data_gen=torch.Generator().manual_seed(0))
    order = gan_train._epoch_order(run)
    assert len(order) == 400 and abs(int((labels[order] == 1).sum()) - 200) < 40
    run.cfg.balance = False
    assert sorted(gan_train._epoch_order(run).tolist()) == list(range(400))
    run.data.labels = torch.zeros(400, dtype=torch.long)  # one class (a per-class model): nothing to balance
    run.cfg.balance = True
    assert sorted(gan_train._epoch_order(run).tolist()) == list(range(400))

    result = train(GanConfig(data=str(phantoms), out=str(tmp_path), recipe="limited", epochs=1, balance=True,
                             **TINY_GAN))
    assert result["trained"] and _weights(tmp_path / "last.pt")["config"]["balance"] is True
    with pytest.raises(UserError, match="was trained with --balance True"):
        train(GanConfig(data=str(phantoms), out=str(tmp_path), recipe="limited", epochs=2, balance=False, **TINY_GAN))
    with pytest.raises(UserError, match="--balance takes no value"):
        GanConfig(data=str(phantoms), out=str(tmp_path / "x"), balance="yes").resolved()
