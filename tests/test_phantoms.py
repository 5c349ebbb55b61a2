"""The phantom generator: deterministic, balanced, patient-level splits, readable, and anatomically sane."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cxrgan.data import phantoms
from cxrgan.data.datasetfile import SPLITS, read_info
from cxrgan.data.reader import H5ImageDataset

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_phantoms.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("phantoms") / "p.h5"
    phantoms.generate(path, n=121, size=32, seed=3)
    return path


def _images(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {s: f[s]["images"][:] for s in SPLITS}


def _all(path):
    """Images, labels and patient ids of every split, concatenated."""
    parts = [H5ImageDataset(path, s, in_memory=True) for s in SPLITS]
    return (np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
            np.concatenate([p.patient_ids for p in parts]))


def _region(images: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Mean intensity per image over a box given in normalised coordinates (x right, y down, in [-1, 1])."""
    size = images.shape[-1]
    px = lambda v: int(round((v + 1) / 2 * size))  # noqa: E731
    return images[:, px(y0):px(y1), px(x0):px(x1)].astype(np.float64).mean(axis=(1, 2))


def test_same_seed_same_pixels_other_seed_differs(tmp_path, dataset):
    again, other = tmp_path / "again.h5", tmp_path / "other.h5"
    phantoms.generate(again, n=121, size=32, seed=3)
    phantoms.generate(other, n=121, size=32, seed=4)
    a, b, c = _images(dataset), _images(again), _images(other)
    assert all(np.array_equal(a[s], b[s]) for s in SPLITS)
    assert read_info(dataset).attrs["content_sha256"] == read_info(again).attrs["content_sha256"]
    assert read_info(dataset).attrs["content_sha256"] != read_info(other).attrs["content_sha256"]
    assert not np.array_equal(a["train"][:10], c["train"][:10])


def test_render_is_deterministic_and_any_size_works():
    for size in (16, 64, 512):
        first = phantoms.render(size, 1, np.random.default_rng(7))
        assert first.dtype == np.uint8 and first.shape == (size, size)
        assert np.array_equal(first, phantoms.render(size, 1, np.random.default_rng(7)))


def test_classes_balanced_and_patients_in_one_split(dataset):
    info = read_info(dataset)
    assert info.attrs["source"] == "phantoms" and info.attrs["split_method"] == "patient"
    totals = {c: sum(info.counts[s][c] for s in SPLITS) for c in info.classes}
    assert totals == {"No Finding": 61, "Infiltration": 60}
    seen = {}
    for split in SPLITS:
        ds = H5ImageDataset(dataset, split)
        assert all(n.startswith("phantom_") and n.endswith(".png") for n in ds.names)
        for pid, label in zip(ds.patient_ids.tolist(), ds.labels.tolist()):
            assert seen.setdefault(pid, (split, label)) == (split, label), "patient in two splits or two classes"
    per_patient = np.bincount(np.asarray(list(_all(dataset)[2])))
    assert per_patient[per_patient > 0].max() <= 3
    assert info.counts["train"]["No Finding"] > info.counts["test"]["No Finding"] > 0


def test_reader_gives_float_tensors_in_range(dataset):
    ds = H5ImageDataset(dataset, "train")
    x, label = ds[0]
    assert tuple(x.shape) == (1, 32, 32) and x.dtype.is_floating_point
    assert -1.0 <= float(x.min()) < float(x.max()) <= 1.0 and label in (0, 1)


def test_infiltration_brightens_the_lungs(dataset):
    images, labels, _ = _all(dataset)
    lungs = (_region(images, -0.6, -0.25, -0.4, 0.1) + _region(images, 0.3, 0.6, -0.4, 0.1)) / 2
    assert lungs[labels == 1].mean() > lungs[labels == 0].mean() + 3


def test_heart_shadow_is_on_the_image_right(dataset):
    images, _, _ = _all(dataset)
    right = _region(images, 0.15, 0.4, 0.05, 0.3).mean()
    left = _region(images, -0.4, -0.15, 0.05, 0.3).mean()
    assert right > left + 20


def _run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [["--size", "30"], ["--n", "0"], ["--n", "2.5"], ["--fractions", "0.5,0.6,0.1"]])
def test_cli_bad_values_fail_with_one_line_and_write_nothing(tmp_path, args):
    out = tmp_path / "x.h5"
    r = _run_tool("--out", str(out), *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_existing_output_without_overwrite(tmp_path):
    out = tmp_path / "x.h5"
    out.write_bytes(b"keep me")
    r = _run_tool("--out", str(out), "--n", "4", "--size", "16")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0], r.stderr
    assert out.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [out]


def test_cli_writes_a_readable_file(tmp_path):
    out = tmp_path / "x.h5"
    r = _run_tool("--out", str(out), "--n", "6", "--size", "16", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert sum(sum(c.values()) for c in read_info(out).counts.values()) == 6
    assert "not medical images" in r.stderr
