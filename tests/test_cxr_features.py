"""The cxr feature network: make_hdf5 --other-findings, train_features (one step, with and without findings), the
checkpoint through the registry and fid_is, refused checkpoints and refused held-out splits."""

import json
import re
import subprocess

import h5py
import numpy as np
import pytest
import torch

from cxrgan.cli import merge_repeated
from cxrgan.data.datasetfile import SAMPLES_SCHEMA, DatasetWriter
from cxrgan.data.ingest import IngestConfig, build_dataset
from cxrgan.data.phantoms import generate
from cxrgan.data.reader import H5ImageDataset
from cxrgan.errors import UserError
from cxrgan.generative.config import GanConfig
from cxrgan.metrics import cxr, networks
from cxrgan.metrics.features import feature_net
from conftest import ROOT, load_tool, nih_rows, run_tool, write_nih_tree


@pytest.fixture(scope="module")
def nih_files(tmp_path_factory):
    """A 32x32 NIH-shaped tree built twice: the study's two classes (patient splits) and its other findings."""
    tmp = tmp_path_factory.mktemp("nih")
    rows = nih_rows(n_patients=16, seed=1)
    tree = write_nih_tree(tmp / "tree", rows)
    study, others = tmp / "study.h5", tmp / "others.h5"
    build_dataset(IngestConfig(src=str(tree), out=str(study), size=32, workers=0, balance=False))
    build_dataset(IngestConfig(src=str(tree), out=str(others), size=32, workers=0, balance=False,
                               other_findings=True, fractions="1,0,0"))
    return rows, study, others


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    path = tmp_path_factory.mktemp("ph") / "ph.h5"
    generate(path, n=60, size=32, seed=3)
    return path


@pytest.fixture(scope="module")
def ckpt(nih_files, tmp_path_factory):
    _, study, others = nih_files
    out = tmp_path_factory.mktemp("cxr") / "cxr.pt"
    load_tool("train_features").main(data=f"{study}:train,{others}", out=str(out), epochs=1, batch=64,
                                     val_fraction=0.3, device="cpu")
    return out


def test_other_findings_keeps_only_what_neither_class_takes(nih_files):
    rows, _, others = nih_files
    ds = H5ImageDataset(others, "train")
    expected = sorted(r["name"] for r in rows if r["findings"] != "No Finding" and "Infiltration" not in r["findings"])
    assert ds.classes == ["Other findings"] and sorted(ds.names) == expected
    with h5py.File(others) as f:
        findings = [v.decode() for v in f["train/findings"][:]]
        assert len(f["test/labels"]) == len(f["val/labels"]) == 0
    assert set(findings) == {"Atelectasis", "Effusion"}


def test_trains_one_step_on_findings_and_loads_through_the_registry(ckpt, nih_files):
    summary = json.loads(ckpt.with_suffix(".json").read_text())
    assert [r["targets"] for r in summary["trained_on"]] == ["findings", "findings"]
    assert [r["split"] for r in summary["trained_on"]] == ["train", "train"]
    assert all(len(r["content_sha256"]) == 64 for r in summary["trained_on"])
    assert len(summary["history"]) == 1 and np.isfinite(summary["history"][0]["loss"])
    net = feature_net(f"cxr:{ckpt}", device="cpu")
    images = H5ImageDataset(nih_files[1], "test").read_uint8(np.arange(3))
    feats, logits = net(images)
    assert feats.shape == (3, 256) and logits is None and net.key.startswith("cxr-")
    model, meta = cxr.load(ckpt)
    assert meta["findings"] == list(cxr.FINDINGS) and meta["size"] == 64 and meta["config"]["epochs"] == 1
    with torch.no_grad():
        x = torch.from_numpy(images).unsqueeze(1).float() / 127.5 - 1
        x = torch.nn.functional.interpolate(x, size=64, mode="bilinear", antialias=True, align_corners=False)
        assert model(x).shape == (3, 14) and np.allclose(model.features(x).numpy(), feats, atol=1e-5)


def test_trains_on_class_labels_without_findings(phantoms, tmp_path):
    out = tmp_path / "ph.pt"
    load_tool("train_features").main(data=str(phantoms), out=str(out), epochs=1, batch=64, width=8, val_fraction=0,
                                     device="cpu")
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["trained_on"][0]["targets"] == "class labels" and record["n_val"] == 0
    assert cxr.load(out)[0].head.in_features == 64
    assert torch.equal(cxr.targets(["No Finding", "Effusion|Infiltration"])[:, [2, 3]],
                       torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(UserError, match="not one of NIH's 14"):
        cxr.targets(["Effusion|Broken bone"], "x.h5:train")


def test_fid_is_scores_in_the_cxr_space(ckpt, phantoms, tmp_path):
    train = H5ImageDataset(phantoms, "train", in_memory=True)
    fake = tmp_path / "synthetic.h5"
    w = DatasetWriter(fake, 32, train.classes, {"synthetic": 20}, with_patients=False, schema=SAMPLES_SCHEMA)
    w.add_batch("synthetic", train.labels[:20], [f"synthetic_{i:06d}" for i in range(20)],
                (train.images[:20] * 0.8).astype(np.uint8))
    w.close(source="test")
    out = tmp_path / "cxr.json"
    load_tool("fid_is").main(real=str(phantoms), fake=str(fake), out=str(out), features=f"cxr:{ckpt}", cache="",
                             kid_subset_size=10, audit=False, device="cpu")
    s = json.loads(out.read_text())
    assert s["features"]["network"] == "cxr" and s["features"]["dim"] == 256 and np.isfinite(s["fid"])
    assert s["is_mean"] is None


def test_a_damaged_or_edited_checkpoint_is_refused_with_one_line(ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:5000])
    saved = torch.load(ckpt, weights_only=True)
    edited = tmp_path / "edited.pt"
    saved["state"]["head.bias"][0] += 1.0  # the stored digest no longer matches
    torch.save(saved, edited)
    other = tmp_path / "other.pt"
    torch.save({"format": "cxrgan-classifier/1", "state": {}}, other)
    for path, message in ((cut, "damaged"), (edited, "modified after it was written"), (other, "not a cxr feature"),
                          (tmp_path / "none.pt", "no such file")):
        with pytest.raises(UserError, match=message) as e:
            feature_net(f"cxr:{path}", device="cpu")
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cxr:PATH"):
        feature_net("cxr", device="cpu")


def test_held_out_splits_are_refused_unless_allowed(phantoms, tmp_path):
    r = run_tool("train_features.py", "--data", phantoms, "--data", f"{phantoms}:test", "--out", tmp_path / "x.pt",
                 "--device", "cpu")
    assert r.returncode == 2 and "held-out split" in r.stderr and "--allow-held-out" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.pt").exists()
    tool = load_tool("train_features")
    assert merge_repeated(tool.main, ["--data", "a.h5", "--epochs", "2", "--data=b.h5:train"]) == \
        ["--data=a.h5,b.h5:train", "--epochs", "2"]  # python-fire alone would keep only the last --data
    with pytest.raises(UserError, match="held-out"):
        tool.main(data=f"{phantoms}:val", out=str(tmp_path / "y.pt"), device="cpu")
    tool.main(data=f"{phantoms}:val", out=str(tmp_path / "y.pt"), epochs=1, width=8, val_fraction=0,
              allow_held_out=True, device="cpu")
    assert json.loads((tmp_path / "y.json").read_text())["trained_on"][0]["split"] == "val"


def test_the_makefile_builds_and_uses_the_network_from_the_table(tmp_path):
    assert "cxr:CXR:-:features/cxr.pt" in networks.make_table().split()
    assert networks.argument_file("cxr:a/cxr.pt") == "a/cxr.pt" and networks.argument_file("inception") is None
    snapshots = GanConfig(data="d.h5", snapshot_features="cxr:a/cxr.pt").input_paths()  # checked like other inputs
    assert snapshots["--snapshot-features"] == "a/cxr.pt"

    def plan(*args):
        return subprocess.run(["make", "--no-print-directory", "-n", *args, f"OUTPUTS={tmp_path}/o",
                               f"DATA_DIR={tmp_path}/d"], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=120).stdout.replace("\\\n", " ")

    text = plan("features", "FEATURES_EXTRA=extra", "FEATURES_EPOCHS=2")
    assert re.search(r"make_hdf5.py --overwrite --src extra --out \S+/d/features-extra-64.h5 .*--other-findings", text)
    train = " ".join(next(line for line in text.splitlines() if "train_features.py" in line).split())
    assert f"--data {tmp_path}/d/nih-mini-64.h5:train,{tmp_path}/d/features-extra-64.h5:train " in train
    assert f"--out {tmp_path}/o/features/cxr.pt --epochs 2 " in train
    assert "features-extra" not in plan("features")  # without FEATURES_EXTRA: the main dataset's train split only
    metrics = plan("metrics", "CXR=1")
    assert "train_features.py" in metrics and f"--features cxr:{tmp_path}/o/features/cxr.pt" in metrics
    metrics = plan("metrics", "CXR=1", "CXR_WEIGHTS=mine.pt")
    assert "train_features.py" not in metrics and "--features cxr:mine.pt" in metrics
