"""Training length in images shown (--kimg) and metric snapshots during training (metrics.csv, best.pt)."""

import csv
import math
import sys

import pytest
import torch

from cxrgan.classify import model as classifier
from cxrgan.data.reader import H5ImageDataset
from cxrgan.errors import UserError
from cxrgan.generative.sample import resolve_generators
from cxrgan.generative.objectives import OBJECTIVES
from cxrgan.generative.snapshots import columns
from cxrgan.generative.train import GanConfig, train
from conftest import ROOT, TINY_GAN, kill_9_then_rerun




@pytest.fixture(scope="module")
def features(phantoms96, tmp_path_factory):
    """An (untrained) train_resnet checkpoint: enough to give snapshots a feature space."""
    path = tmp_path_factory.mktemp("clf") / "model-seed0.pt"
    torch.manual_seed(0)
    classifier.save(path, classifier.build(2).state_dict(), ["No Finding", "Infiltration"], size=32, seed=0)
    return f"classifier:{path}"


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_kimg_sets_the_length_in_images_shown(phantoms96, tmp_path):
    n_train = len(H5ImageDataset(phantoms96, "train"))
    per_epoch = (n_train // 8) * 8
    result = train(GanConfig(data=str(phantoms96), out=str(tmp_path), recipe="improved", kimg=0.2, **TINY_GAN))
    assert result["epochs"] == math.ceil(200 / per_epoch) and 200 <= result["kimg"] * 1000 < 200 + per_epoch
    with pytest.raises(UserError, match="--epochs or --kimg"):
        GanConfig(data=str(phantoms96), epochs=2, kimg=1.0).resolved()
    with pytest.raises(UserError, match="--kimg must be a positive number"):
        GanConfig(data=str(phantoms96), kimg=0).resolved()


def test_kimg_resume_continues_exactly(phantoms96, tmp_path):
    cfg = dict(data=str(phantoms96), recipe="improved", **TINY_GAN)
    train(GanConfig(out=str(tmp_path / "straight"), kimg=0.25, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), kimg=0.1, **cfg))
    train(GanConfig(out=str(tmp_path / "resumed"), kimg=0.25, **cfg))
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_snapshots_write_metrics_and_keep_the_best_by_validation_kid(phantoms96, features, tmp_path):
    out = tmp_path / "run"
    train(GanConfig(data=str(phantoms96), out=str(out), recipe="improved", epochs=4, snapshot_kimg=0.05,
                    snapshot_n=40, snapshot_features=features, select_snapshot=True, **TINY_GAN))
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == columns(OBJECTIVES["adversarial"].snapshot_columns)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # 64 images per epoch
    for r in rows:
        assert 0 <= float(r["recall"]) <= 1 and float(r["pixel_diversity"]) > 0 and float(r["kid"]) == float(r["kid"])
        assert int(r["n_fake"]) == 40 and -1 <= float(r["rt_train"]) <= 1
    best = torch.load(out / "best.pt", weights_only=True)
    kids = [float(r["kid"]) for r in rows]
    assert best["snapshot_best"]["kid"] == pytest.approx(min(kids))
    assert best["epoch"] == int(rows[kids.index(min(kids))]["epoch"])
    assert (out / "metrics.png").is_file()
    chosen = resolve_generators(str(out), out, [0, 1], "cpu")  # a run folder: best.pt wins over last.pt
    assert chosen[0].path.name == "best.pt"


def test_diffusion_snapshots_measure_the_samples_and_have_no_discriminator_columns(phantoms96, features, tmp_path):
    out = tmp_path / "run"
    train(GanConfig(data=str(phantoms96), out=str(out), recipe="diffusion", epochs=2, snapshot_kimg=0.05,
                    snapshot_n=20, snapshot_features=features, select_snapshot=True, **TINY_GAN))
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert float(r["kid"]) == float(r["kid"]) and float(r["pixel_diversity"]) > 0 and int(r["n_fake"]) == 20
        assert not {"d_train", "d_val", "d_fake", "rt_train", "rt_val"} & set(r)  # the objective has no D
    assert (out / "best.pt").is_file()


def test_select_snapshot_needs_features(phantoms96):
    with pytest.raises(UserError, match="--select-snapshot"):
        GanConfig(data=str(phantoms96), snapshot_kimg=1, select_snapshot=True).resolved()


def test_metrics_rows_are_not_duplicated_after_kill_9(phantoms96, tmp_path):
    args = [sys.executable, str(ROOT / "tools/train_dcgan.py"), "--data", phantoms96, "--out", tmp_path,
            "--recipe", "improved", "--epochs", "8", "--batch", "8", "--base", "8", "--grid", "4", "--device", "cpu",
            "--snapshot-kimg", "0.05", "--snapshot-n", "16"]
    r = kill_9_then_rerun(args, tmp_path / "ckpt-000003.pt")
    assert r.returncode == 0, r.stderr
    epochs = [int(r["epoch"]) for r in _rows(tmp_path / "metrics.csv")]
    assert epochs == list(range(1, 9))  # one row per snapshot, none twice, none missing
