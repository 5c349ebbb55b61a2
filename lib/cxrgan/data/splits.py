"""Patient-level splits, per-class caps and class balancing. All deterministic for a seed."""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def parse_fractions(value, test_only: bool = False) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` (or a tuple, as python-fire passes it) -> train/val/test fractions summing to 1.
    ``test_only``: a zero train fraction is allowed as ``0,0,1`` (every image in the test split: an external test
    set); otherwise the train fraction must be positive."""
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        fr = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        fr = ()
    if len(fr) != 3 or min(fr) < 0 or not abs(sum(fr) - 1) < 1e-6:
        raise UserError(f"--fractions must be three non-negative numbers train,val,test summing to 1 "
                        f"(e.g. 0.7,0.1,0.2), got {value!r}")
    if fr[0] <= 0 and not (test_only and fr[2] == 1):
        hint = "; 0,0,1 puts every image in the test split" if test_only else ""
        raise UserError(f"--fractions {value!r} leaves no training images; give a positive train fraction "
                        f"(e.g. 0.7,0.1,0.2){hint}")
    return fr


def patient_split(patients: np.ndarray, labels: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Assign every image a split index (0 train, 1 val, 2 test) so that no patient is in two splits.

    Patients are stratified by whether they have any positive image, shuffled with ``seed``, and cut where the
    cumulative image count crosses the fractions, so each split gets about its share of images of each kind.
    A negative patient id means unknown: that image is its own patient.
    """
    patients = np.asarray(patients, dtype=np.int64).copy()
    unknown = patients < 0
    patients[unknown] = -1 - np.flatnonzero(unknown)  # unique stand-ins
    uniq, inverse = np.unique(patients, return_inverse=True)
    n_images = np.bincount(inverse, minlength=len(uniq))
    positive = np.bincount(inverse, weights=(np.asarray(labels) > 0), minlength=len(uniq)) > 0
    bounds = np.cumsum(fractions)[:-1]
    rng = np.random.default_rng(seed)
    split_of_patient = np.zeros(len(uniq), dtype=np.int64)
    for stratum in (False, True):
        members = np.flatnonzero(positive == stratum)
        members = members[rng.permutation(len(members))]
        counts = n_images[members]
        total = counts.sum()
        if total == 0:
            continue
        midpoints = (np.cumsum(counts) - counts / 2) / total
        split_of_patient[members] = np.searchsorted(bounds, midpoints, side="right")
    return split_of_patient[inverse]


def official_split(names, train_val: set[str], test: set[str], patients, labels, val_fraction: float,
                   seed: int) -> np.ndarray:
    """The official test list as test; train_val_list split by patient into train and val. -1 = in neither list."""
    names = np.asarray(names)
    in_test = np.isin(names, list(test))
    in_tv = np.isin(names, list(train_val)) & ~in_test
    out = np.full(len(names), -1, dtype=np.int64)
    out[in_test] = 2
    if in_tv.any():
        sub = patient_split(np.asarray(patients)[in_tv], np.asarray(labels)[in_tv],
                            (1 - val_fraction, val_fraction, 0.0), seed)
        out[in_tv] = sub
    return out


def cap_per_class(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Mask keeping at most ``cap`` randomly chosen images of each class."""
    keep = np.ones(len(labels), dtype=bool)
    if cap is None:
        return keep
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > cap:
            keep[rng.choice(idx, len(idx) - cap, replace=False)] = False
    return keep


def balance_classes(split: np.ndarray, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Mask that down-samples, within each split, every class to the size of the smallest one."""
    keep = np.ones(len(labels), dtype=bool)
    for s in np.unique(split):
        in_split = split == s
        sizes = [int((in_split & (labels == c)).sum()) for c in range(n_classes)]
        target = min(sizes)
        for c in range(n_classes):
            idx = np.flatnonzero(in_split & (labels == c))
            if len(idx) > target:
                keep[rng.choice(idx, len(idx) - target, replace=False)] = False
    return keep


def patient_fraction(labels: np.ndarray, patients: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Indices of a patient-level ``fraction`` of a split, per class (at least one patient each). One seeded
    permutation of each class's patients, of which a fraction is the prefix: for one seed, smaller fractions are
    subsets of larger ones (10% within 25% within 50%), so a low-data curve adds patients as it goes and the GAN
    and the classifier of one fraction see the same images."""
    labels = np.asarray(labels)
    if fraction >= 1:
        return np.arange(len(labels))
    patients = np.asarray(patients) if patients is not None else np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        order = rng.permutation(np.unique(patients[labels == c]))
        chosen = order[:max(1, round(fraction * len(order)))]
        keep.append(np.flatnonzero((labels == c) & np.isin(patients, chosen)))
    return np.sort(np.concatenate(keep))
