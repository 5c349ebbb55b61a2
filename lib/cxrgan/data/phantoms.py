"""Procedural chest-radiograph-like phantoms: the default, freely shareable dataset.

These are NOT medical images. They are drawn from a handful of shapes (thorax, lungs, ribs, spine, heart,
diaphragm) so the whole pipeline can run without downloading real data; class 1 ("Infiltration") phantoms
carry patchy, ill-defined opacities inside the lung fields, class 0 ("No Finding") have clear lungs.

Everything is drawn in normalised coordinates (x to the image right, y down, both in [-1, 1]), so any size
gives the same picture. Display convention is PA: the patient's left (heart side) is the image right.
Brightness means attenuation: air is dark, bone and soft tissue bright.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..cli import ProgressFn, no_progress
from .. import options
from ..errors import UserError
from ..fileio import H5_SUFFIXES, check_output_path
from .datasetfile import DEFAULT_CLASSES, SPLITS, write_dataset
from .splits import parse_fractions, patient_split

MIN_SIZE, MAX_SIZE = 16, 512
NOISE_SIDE = 48  # smooth random fields are computed at most this large, then upsampled


# ---------------------------------------------------------------------------------------------- parameters

def patient_anatomy(rng: np.random.Generator) -> dict:
    """Per-patient shape parameters, so several images of one synthetic patient look alike."""
    u = rng.uniform
    return {
        "body_half_width": u(0.80, 0.93),
        "shoulder_y": u(-0.98, -0.88),
        "neck_half_width": u(0.17, 0.23),
        "tissue": u(0.85, 1.15),            # soft-tissue density
        "lung_cx": u(0.35, 0.40),           # lung centre, distance from the midline
        "lung_cy": u(-0.16, -0.08),
        "lung_rx": u(0.29, 0.33),
        "lung_ry": u(0.58, 0.68),
        "lung_flare": u(0.12, 0.25),        # how much wider the lungs get towards the base
        "dome_y": u(0.30, 0.42),            # top of the patient's left hemidiaphragm (image right)
        "dome_right_lift": u(0.02, 0.07),   # the right hemidiaphragm (image left) sits higher
        "dome_depth": u(0.16, 0.24),        # costophrenic angles lie this far below the dome top
        "mediastinum_half_width": u(0.11, 0.14),
        "heart_cx": u(0.08, 0.12),          # the heart bulges to the image right (the patient's left)
        "heart_cy": u(0.36, 0.44),
        "heart_rx": u(0.30, 0.38),          # cardiothoracic ratio about 0.4-0.5
        "heart_ry": u(0.36, 0.44),
        "heart_atrium": u(0.03, 0.07),      # the right atrium's bulge to the image left
        "rib_top": u(-0.80, -0.72),
        "rib_spacing": u(0.115, 0.14),
        "rib_arch": u(0.8, 1.1),          # how strongly the posterior ribs bend downwards laterally
        "rib_width": u(0.40, 0.50),         # fraction of the spacing that is bone
        "bone": u(0.85, 1.15),              # bone density
        "clavicle_y": u(-0.56, -0.48),
        "vessel_seed": int(rng.integers(2**31)),
    }


def _image_params(rng: np.random.Generator) -> dict:
    """Per-image variation: positioning, inspiration and exposure. Plain floats keep the arithmetic float32."""
    u = rng.uniform
    return {
        "shift": (u(-0.04, 0.04), u(-0.04, 0.04)),
        "angle": float(np.deg2rad(u(-3.0, 3.0))),
        "scale": u(0.95, 1.05),
        "inspiration": u(-0.03, 0.03),      # moves the diaphragm
        "exposure": u(0.9, 1.3),
        "contrast": u(0.9, 1.1),
        "gamma": u(0.85, 1.2),
        "offset": u(0.0, 0.04),
        "noise": u(0.008, 0.02),
    }


# ---------------------------------------------------------------------------------------------- geometry

@functools.lru_cache(maxsize=8)
def _base_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] for a size x size image (read-only, cached per size)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _view_grid(size: int, view: dict) -> tuple[np.ndarray, np.ndarray]:
    """The base grid moved into the patient's frame (inverse of the small per-image shift/rotate/scale)."""
    x, y = _base_grid(size)
    c, s = float(np.cos(view["angle"])), float(np.sin(view["angle"]))
    xs, ys = x - view["shift"][0], y - view["shift"][1]
    k = 1 / view["scale"]
    return (c * xs + s * ys) * k, (-s * xs + c * ys) * k


def _soft(d, width: float):
    """A soft step: 0 where d < -1.5 width, 1 where d > 1.5 width, smooth (cubic) in between."""
    t = np.clip(d * np.float32(1 / (3 * width)) + np.float32(0.5), 0, 1)
    return t * t * (3 - 2 * t)


@functools.lru_cache(maxsize=8)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """(size, cells) weights that spread ``cells`` random values smoothly over ``size`` pixels (read-only, cached).

    Gaussian bumps one cell apart (narrow enough that neighbouring cells stay distinct), scaled so that a field
    of unit-variance cells keeps about unit variance.
    """
    centres = np.linspace(-1.2, 1.2, cells)
    pixels = ((np.arange(size) + 0.5) / size) * 2 - 1
    w = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / (0.6 * (centres[1] - centres[0]))) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


def _smooth_noise(rng: np.random.Generator, size: int, cells: int):
    """A smooth random field of about unit variance over the image, with about ``cells`` blobs across.

    A cells x cells random grid, interpolated separably to at most NOISE_SIDE pixels (matrices small enough that
    BLAS stays single-threaded: threads only cost time here), then bilinearly to ``size``. The same random
    numbers give the same picture at every size.
    """
    side = min(size, NOISE_SIDE)
    w = _upsampler(side, cells)
    field = w @ rng.standard_normal((cells, cells), dtype=np.float32) @ w.T
    if side < size:
        field = ndimage.zoom(field, size / side, order=1, mode="nearest", grid_mode=True)
    return field


# ---------------------------------------------------------------------------------------------- anatomy layers

def _body(x, y, a: dict, edge: float):
    """Soft-tissue silhouette: a rounded thorax widening downwards, sloping shoulders and the neck."""
    u = np.abs(x)
    # the chest wall, with the shoulders and upper arms flaring out above the axillae
    half_width = a["body_half_width"] * (0.97 + 0.03 * np.clip(y, -1, 1)) + 0.12 * _soft(-0.55 - y, 0.15)
    shoulder_line = a["shoulder_y"] + 0.6 * np.maximum(u - a["neck_half_width"], 0) ** 2
    trunk = _soft(half_width - u, edge * 3) * _soft(y - shoulder_line, edge * 4)
    neck = _soft(a["neck_half_width"] - u, edge * 2)
    silhouette = np.maximum(trunk, neck)
    # thicker in the middle than at the flanks, so the chest wall fades towards the edges
    thickness = 0.6 + 0.4 * np.sqrt(np.clip(1 - (x / (a["body_half_width"] + 0.05)) ** 2, 0, 1))
    return silhouette * thickness * a["tissue"]


def _diaphragm_y(x, a: dict, view: dict):
    """Height of the diaphragm under each lung: a dome per side, lowest at the costophrenic angles."""
    u = np.abs(x)
    top = a["dome_y"] + view["inspiration"] - np.where(x < 0, a["dome_right_lift"], 0.0).astype(np.float32)
    return top + a["dome_depth"] * ((u - a["lung_cx"] + 0.03) / (a["lung_rx"] + 0.05)) ** 2


def _bulge(y, centre: float, half_height: float):
    """A half-ellipse profile in y: 1 at ``centre``, 0 beyond ``half_height`` from it."""
    return np.sqrt(np.clip(1 - ((y - centre) / half_height) ** 2, 0, 1))


def _mediastinum(x, y, a: dict, edge: float):
    """The central shadow as one outline: great vessels and spine above, the heart bulging below.

    Its image-right border carries the aortic knob and the heart's left ventricle (the patient's left);
    the image-left border the right atrium, a smaller bulge.
    """
    w = a["mediastinum_half_width"]
    knob = 0.05 * np.exp(-(((y + 0.3) / 0.08) ** 2))
    right_border = np.maximum(w + knob, a["heart_cx"] + a["heart_rx"] * _bulge(y, a["heart_cy"], a["heart_ry"]))
    left_border = w + a["heart_atrium"] * _bulge(y, a["heart_cy"] - 0.05, a["heart_ry"] * 0.8)
    return _soft(right_border - x, edge * 3) * _soft(x + left_border, edge * 3) * _soft(y + 0.72, 0.08)


def _lungs(x, y, a: dict, view: dict, mediastinum, edge: float):
    """The two lung fields (1 = air), bounded by the ribcage, the diaphragm and the mediastinum."""
    u = np.abs(x)
    t = (y - a["lung_cy"]) / a["lung_ry"]
    rx = a["lung_rx"] * (1 + a["lung_flare"] * np.clip(t, -1, 1))
    r = ((u - a["lung_cx"] - 0.03 * t) / rx) ** 2 + np.maximum(t, 0) ** 6 + np.abs(np.minimum(t, 0)) ** 2.5
    field = _soft(1 - r, edge * 3)
    field *= _soft(_diaphragm_y(x, a, view) - y, edge * 2)
    return field * (1 - mediastinum)


def _ribs(x, y, a: dict, edge: float):
    """Posterior ribs as curved bands sweeping laterally and down, faint anterior ribs sloping the other way."""
    u = np.abs(x)
    cage = _soft(a["body_half_width"] - 0.1 - u, edge * 4) * _soft(u - 0.05, edge * 2)
    curve = a["rib_arch"] * u**2 - 0.25 * u
    v = (y - curve - a["rib_top"]) / a["rib_spacing"]
    v = np.maximum(v, 0) ** 0.93 + np.minimum(v, 0)  # ribs spread a little lower down
    phase = v - np.floor(v)
    band = _soft(a["rib_width"] / 2 - np.abs(phase - 0.5), edge * 2 / a["rib_spacing"])
    posterior = band * _soft(v, 0.3) * _soft(10.5 - v, 0.3) * cage
    # anterior ribs: higher laterally, lower towards the sternum, visible only away from the midline
    va = (y + 0.45 * u - a["rib_top"] + 0.05) / (a["rib_spacing"] * 1.6)
    phase_a = va - np.floor(va)
    anterior = _soft(0.18 - np.abs(phase_a - 0.5), edge * 2) * _soft(va, 0.3) * _soft(5.5 - va, 0.3)
    anterior *= cage * _soft(u - 0.25, edge * 6)
    return posterior + 0.5 * anterior


def _clavicles(x, y, a: dict, edge: float):
    """Two bony bars over the lung apices, from near the midline out towards the shoulders."""
    u = np.abs(x)
    centre = a["clavicle_y"] - 0.3 * u + 0.12 * u**2  # rising towards the shoulder
    bone = _soft(0.04 - np.abs(y - centre), edge * 1.5)
    return bone * _soft(u - 0.07, edge * 2) * _soft(0.72 - u, edge * 4)


def _spine(x, y, edge: float):
    """Vertebral column: a bright midline band with faint discs between the bodies."""
    column = _soft(0.065 - np.abs(x), edge * 2)
    discs = 0.8 + 0.2 * np.cos(2 * np.pi * (y / 0.11))
    return column * discs


def _trachea(x, y, edge: float):
    """Air column from the neck down to the carina."""
    return _soft(0.03 - np.abs(x - 0.01 * (y + 1)), edge * 1.5) * _soft(-0.25 - y, edge * 4)


def _vessels(x, y, a: dict, lungs, edge: float):
    """Lung markings: streaks radiating from each hilum, thinning towards the periphery."""
    rng = np.random.default_rng(a["vessel_seed"])
    hx = np.where(x < 0, -0.17, 0.17).astype(np.float32)
    dx, dy = x - hx, y + 0.05
    r = np.sqrt(dx * dx + dy * dy)
    direction = dy / (r + 1e-3)  # the sine of the angle: the same on both sides, so one table serves both
    g = rng.standard_normal((48, 8)).astype(np.float32)
    rows = (direction + 1) * 23.5
    cols = np.clip(r * 8, 0, 7)
    streaks = np.maximum(ndimage.map_coordinates(g, [rows, cols], order=1, mode="nearest"), 0)
    hilum = _soft(1 - (dx / 0.07) ** 2 - (dy / 0.11) ** 2, edge * 4)
    return lungs * streaks * np.exp(-r / 0.35) + hilum * 0.5


def _infiltrates(x, y, a: dict, lungs, rng: np.random.Generator):
    """Patchy, ill-defined opacities: a few soft blobs broken up by a smooth random field, inside the lungs."""
    n = int(rng.integers(2, 6))
    blobs = np.zeros_like(x)
    for _ in range(n):
        side = 1.0 if rng.random() < 0.5 else -1.0
        cx = side * (a["lung_cx"] + rng.uniform(-0.1, 0.1))
        cy = a["lung_cy"] + a["lung_ry"] * rng.uniform(-0.4, 0.7)  # mid and lower zones more often
        rx, ry = rng.uniform(0.08, 0.2), rng.uniform(0.08, 0.2)
        blobs += rng.uniform(0.6, 1.0) * np.exp(-0.5 * (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))
    patches = np.clip(0.6 + 0.6 * _smooth_noise(rng, x.shape[0], 24), 0, 1.6)
    return np.clip(blobs, 0, 1.2) * patches * lungs


# ---------------------------------------------------------------------------------------------- rendering

def render(size: int, label: int, rng: np.random.Generator, anatomy: dict | None = None) -> np.ndarray:
    """One phantom radiograph, uint8 (size, size). ``anatomy`` from ``patient_anatomy`` (default: a new patient)."""
    a = patient_anatomy(rng) if anatomy is None else anatomy
    view = _image_params(rng)
    x, y = _view_grid(size, view)
    edge = max(0.012, 1.2 / size)  # soft edges, never sharper than about a pixel
    mediastinum = _mediastinum(x, y, a, edge)
    lungs = _lungs(x, y, a, view, mediastinum, edge)
    below_diaphragm = _soft(y - _diaphragm_y(x, a, view), edge * 2) * _soft(np.abs(x) - 0.05, edge)

    # attenuation in rough "soft-tissue path" units: lungs ~0.2, chest wall ~0.5, heart and abdomen ~1
    att = 0.55 * _body(x, y, a, edge)
    att += 0.45 * np.maximum(below_diaphragm, mediastinum)  # heart and abdomen merge
    att -= 0.32 * lungs * (1 + 0.15 * _smooth_noise(rng, size, 24))  # uneven aeration
    att -= 0.1 * _trachea(x, y, edge)
    att += a["bone"] * (0.08 * _ribs(x, y, a, edge) * (0.25 + 0.75 * lungs) + 0.2 * _clavicles(x, y, a, edge)
                       + 0.07 * _spine(x, y, edge))
    att += 0.12 * _vessels(x, y, a, lungs, edge)
    if label:
        att += rng.uniform(0.18, 0.3) * _infiltrates(x, y, a, lungs, rng)
    return _expose(att, view, rng, size)


def _expose(att, view: dict, rng: np.random.Generator, size: int) -> np.ndarray:
    """Attenuation -> film-like brightness, then detector blur, noise and 8-bit quantisation."""
    k = view["exposure"]
    v = (1 - np.exp(-k * np.maximum(att, 0))) / (1 - np.exp(-k * 1.6))  # ~1.6 units of tissue saturate
    v = view["offset"] + view["contrast"] * v
    v = np.clip(v, 0, 1) ** view["gamma"]
    v = ndimage.gaussian_filter(v, sigma=max(0.5, size / 256))
    v += view["noise"] * rng.standard_normal(v.shape, dtype=np.float32)
    return (np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- the dataset file

@dataclass
class PhantomConfig:
    """make_phantoms's options."""

    out: str
    n: int = 400
    size: int = 64
    seed: int = 0
    fractions: str | tuple = "0.7,0.1,0.2"
    overwrite: bool = False

    def validate(self) -> "PhantomConfig":
        check_args(self.n, self.size)
        options.seed(self)
        self.fractions = parse_fractions(self.fractions)
        check_output_path(self.out, self.overwrite, suffixes=H5_SUFFIXES)
        return self

    def output_paths(self) -> dict:
        return {"--out": self.out}


def check_args(n, size) -> None:
    """Validate the dataset request; a UserError says what to pass instead."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n) or n < 2:
        raise UserError(f"--n must be an integer of at least 2 (one image per class), got {n!r}")
    if not is_int(size) or not MIN_SIZE <= size <= MAX_SIZE or size & (size - 1):
        raise UserError(f"--size must be a power of two from {MIN_SIZE} to {MAX_SIZE} (e.g. 64, 256), got {size!r}")


def _patients(n: int, seed: int, images_per_patient: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and patient ids for n images: n//2 of class 1, the rest class 0; each patient 1-3 images of one class.

    Patients appear in a shuffled order, so image numbers do not give the class away.
    """
    rng = np.random.default_rng([seed, 0])
    lo, hi = images_per_patient
    groups = []  # (label, image count) per patient
    for label, count in ((0, n - n // 2), (1, n // 2)):
        while count > 0:
            k = min(int(rng.integers(lo, hi + 1)), count)
            groups.append((label, k))
            count -= k
    order = rng.permutation(len(groups))
    labels = np.concatenate([np.full(groups[i][1], groups[i][0], np.int64) for i in order])
    patients = np.concatenate([np.full(groups[i][1], 1 + j, np.int64) for j, i in enumerate(order)])
    return labels, patients


def generate(path, n: int, size: int, seed: int, fractions=(0.7, 0.1, 0.2), images_per_patient=(1, 3),
             call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Write a phantom dataset file (atomically) and return its root attributes. Same seed, same pixels."""
    check_args(n, size)
    fractions = parse_fractions(fractions)
    lo, hi = images_per_patient
    if not 1 <= lo <= hi:
        raise UserError(f"images_per_patient must be (min, max) with 1 <= min <= max, got {images_per_patient!r}")
    labels, patients = _patients(n, seed, (lo, hi))
    split = patient_split(patients, labels, fractions, seed)
    capacity = {s: int((split == k).sum()) for k, s in enumerate(SPLITS)}
    if call_args is None:
        call_args = {"n": n, "size": size, "seed": seed, "fractions": list(fractions),
                     "images_per_patient": [lo, hi]}
    task = progress("render + write", n)
    with write_dataset(path, size, list(DEFAULT_CLASSES), capacity=capacity, with_patients=True) as writer:
        for i in range(n):
            pid = int(patients[i])
            if i == 0 or pid != patients[i - 1]:  # a patient's images are consecutive
                anatomy = patient_anatomy(np.random.default_rng([seed, 1, pid]))
            image = render(size, int(labels[i]), np.random.default_rng([seed, 2, i]), anatomy)
            writer.add(SPLITS[split[i]], int(labels[i]), f"phantom_{i:06d}.png", image=image, patient_id=pid)
            task(1)
        attrs = writer.close(source="phantoms", args=call_args, seed=seed, split_method="patient")
    return attrs
