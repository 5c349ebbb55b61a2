"""The shipped real subset (data/nih-mini): `make all`'s default dataset builds from a fresh clone."""

import csv

import numpy as np

from cxrgan.data.ingest import IngestConfig, build_dataset
from cxrgan.data.reader import H5ImageDataset
from conftest import ROOT

MINI = ROOT / "data" / "nih-mini"


def test_the_subset_ships_with_credit_and_builds_patient_split(tmp_path):
    rows = list(csv.DictReader(open(MINI / "Data_Entry_nih-mini.csv", newline="")))
    assert len(rows) == len(list((MINI / "images").glob("*.png"))) == 452
    assert "Wang" in (MINI / "README.md").read_text() and "NIH Clinical Center" in (MINI / "README.md").read_text()
    size = sum(p.stat().st_size for p in MINI.rglob("*") if p.is_file())
    assert size < 5 * 2**20
    out = tmp_path / "nih-mini-64.h5"
    build_dataset(IngestConfig(src=str(MINI), out=str(out), size=64, balance=False, workers=1, seed=0))
    splits = {s: H5ImageDataset(out, s, in_memory=True) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 452
    assert splits["train"].classes == ["No Finding", "Infiltration"]
    assert np.bincount(np.concatenate([d.labels for d in splits.values()])).tolist() == [339, 113]
    patients = {s: set(d.patient_ids.tolist()) for s, d in splits.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert splits["train"].images.std() > 20  # real radiographs, not blank
