"""Synthetic images may join a classifier's training data only if they cannot carry validation or test images in:
their samples file must say its generator was trained on the classifier's own dataset (same content hash) and on
its training split, whose patients the dataset keeps apart from validation and test; and no synthetic image may be
pixel-identical, or near-identical (within 2 gray levels RMS), to a validation or test image. A file name proves
nothing (synthetic images are renamed)."""

from __future__ import annotations

import hashlib

import numpy as np

from ..data.reader import H5ImageDataset
from ..errors import UserError
from ..data.pixels import pixel_images, shifted_nearest


NEAR_IDENTICAL = 2 / 255  # RMS pixel difference below which two images count as the same image (noise, re-encoding)


def pixel_digests(images: np.ndarray) -> list[bytes]:
    """A digest of each image's pixels."""
    return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() for image in images]


def check_synthetic(synthetic: H5ImageDataset, data: H5ImageDataset, held_out: list[H5ImageDataset]) -> dict:
    """Raise a UserError unless ``synthetic`` was generated from ``data``'s training split and shares no image with
    ``held_out`` (the validation and test sets). Returns which part of the training split each generator saw:
    [{"real_fraction", "subset_seed"}, ...]."""
    where = synthetic.path
    trained_on = synthetic.info.attrs.get("training_data")
    if not trained_on:
        raise UserError(f"{where} does not record which data its generator was trained on (made before this check or "
                        "not by tools/sample.py); sample it again with tools/sample.py")
    want = data.info.attrs.get("content_sha256", "")
    for d in trained_on:  # every generator (per-class recipes have one per class)
        if not want or d.get("content_sha256") != want:
            raise UserError(f"{where} comes from a generator trained on other data (content sha256 "
                            f"{str(d.get('content_sha256'))[:12]}…) than --data {data.path} ({want[:12]}…); train "
                            "the GAN on --data and sample again")
        if d.get("split") != "train":
            raise UserError(f"{where} comes from a generator trained on the {d.get('split')!r} split of --data; only "
                            "its train split may feed synthetic training images")
    seen = {}
    for ds in held_out:
        for i, digest in enumerate(pixel_digests(ds.images)):
            seen.setdefault(digest, (ds, i))
    copies = [(i, seen[d]) for i, d in enumerate(pixel_digests(synthetic.images)) if d in seen]
    if copies:
        i, (ds, j) = copies[0]
        raise UserError(f"{len(copies)} synthetic images in {where} are pixel-identical to validation/test images "
                        f"(e.g. {synthetic.names[i]} = {ds.split} image {ds.names[j]}); they would leak the test set "
                        "into training")
    held = np.concatenate([ds.images for ds in held_out])
    d, j, _ = shifted_nearest(pixel_images(synthetic.images), pixel_images(held), max_shift=0)
    close = np.flatnonzero(d < NEAR_IDENTICAL)
    if len(close):
        names = [n for ds in held_out for n in ds.names]
        raise UserError(f"{len(close)} synthetic images in {where} are near-identical to validation/test images (e.g. "
                        f"{synthetic.names[close[0]]} ~ {names[j[close[0]]]}, RMS difference "
                        f"{255 * d[close[0]]:.2f} gray levels); they would leak the test set into training")
    return [{"real_fraction": float(d.get("real_fraction", 1.0)), "subset_seed": int(d.get("subset_seed", 0))}
            for d in trained_on]


def sees_more_real_data(gan: dict, real_fraction: float, subset_seed: int) -> bool:
    """Did the generators see real training images this classifier arm does not? (Fractions are nested prefixes of
    one permutation per subset seed, so a GAN fraction within the classifier's, with the same seed, is a subset.)"""
    if real_fraction >= 1:
        return False  # the classifier sees every training patient: nothing held back
    if gan["real_fraction"] >= 1:
        return True
    return gan["real_fraction"] > real_fraction or gan["subset_seed"] != subset_seed
