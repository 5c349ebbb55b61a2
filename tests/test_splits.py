import numpy as np
import pytest

from cxrgan.errors import UserError
from cxrgan.data.splits import (balance_classes, cap_per_class, official_split, parse_fractions, patient_fraction,
                                patient_split)


def _data(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, n_patients)
    patients = np.repeat(np.arange(n_patients) + 1000, per)
    labels = (rng.random(len(patients)) < 0.3).astype(np.int64)
    return patients, labels


def test_no_patient_in_two_splits_and_fractions_respected():
    patients, labels = _data()
    split = patient_split(patients, labels, (0.7, 0.1, 0.2), seed=3)
    for p in np.unique(patients):
        assert len(np.unique(split[patients == p])) == 1
    shares = np.bincount(split, minlength=3) / len(split)
    assert np.allclose(shares, [0.7, 0.1, 0.2], atol=0.03)
    for s in range(3):  # stratified: each split has both classes at roughly the overall rate
        assert abs(labels[split == s].mean() - labels.mean()) < 0.12


def test_split_is_deterministic_per_seed_and_changes_with_it():
    patients, labels = _data()
    a = patient_split(patients, labels, (0.7, 0.1, 0.2), seed=1)
    assert np.array_equal(a, patient_split(patients, labels, (0.7, 0.1, 0.2), seed=1))
    assert not np.array_equal(a, patient_split(patients, labels, (0.7, 0.1, 0.2), seed=2))
    # independent of row order: shuffling rows gives each image the same split
    perm = np.random.default_rng(0).permutation(len(patients))
    assert np.array_equal(patient_split(patients[perm], labels[perm], (0.7, 0.1, 0.2), seed=1), a[perm])


def test_unknown_patients_are_split_one_by_one():
    patients = np.full(100, -1)
    split = patient_split(patients, np.zeros(100), (0.5, 0.0, 0.5), seed=0)
    assert set(np.bincount(split, minlength=3)) == {50, 0}


def test_official_split_keeps_test_list_and_splits_the_rest_by_patient():
    names = np.array([f"{p:08d}_{i:03d}.png" for p in range(1, 41) for i in range(2)])
    patients = np.repeat(np.arange(1, 41), 2)
    test = set(names[patients > 30])
    tv = set(names[patients <= 28])  # patients 29-30 are in neither list
    split = official_split(names, tv, test, patients, np.zeros(len(names)), 0.25, seed=0)
    assert (split[patients > 30] == 2).all() and (split[(patients == 29) | (patients == 30)] == -1).all()
    tr = split[patients <= 28]
    assert set(tr) == {0, 1} and 0.15 < (tr == 1).mean() < 0.35


def test_balance_within_each_split_and_cap():
    patients, labels = _data()
    split = patient_split(patients, labels, (0.7, 0.1, 0.2), seed=0)
    keep = balance_classes(split, labels, 2, np.random.default_rng(0))
    for s in range(3):
        kept = labels[keep & (split == s)]
        assert (kept == 0).sum() == (kept == 1).sum() > 0
    capped = cap_per_class(labels, 10, np.random.default_rng(0))
    assert np.bincount(labels[capped]).tolist() == [10, 10]


@pytest.mark.parametrize("bad", ["0.5,0.5", "0.7,0.2,0.2", "a,b,c", "0,0.5,0.5", (-0.1, 0.6, 0.5)])
def test_bad_fractions(bad):
    with pytest.raises(UserError, match="--fractions"):
        parse_fractions(bad)


def test_fractions_from_fire_tuple():
    assert parse_fractions((0.8, 0.1, 0.1)) == (0.8, 0.1, 0.1)


def test_patient_fractions_are_nested_whole_patients_and_per_class():
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 120, 400)
    labels = (patients % 3 == 0).astype(int)  # a patient's images share a class here
    subsets = [set(patient_fraction(labels, patients, f, seed=5)) for f in (0.1, 0.25, 0.5, 1.0)]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3] == set(range(400))
    for s in subsets[:3]:
        idx = np.array(sorted(s))
        kept = set(patients[idx])
        assert set(np.flatnonzero(np.isin(patients, list(kept)))) == s  # whole patients only
        assert set(labels[idx]) == {0, 1}
    assert set(patient_fraction(labels, patients, 0.25, seed=6)) != subsets[1]
