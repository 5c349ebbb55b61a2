"""fid_is's protocol: how close generated images are to real ones, per class and overall, and whether any generated
image is a near-copy of a real training image.

One pass of feature extraction per image set feeds every metric: FID, KID (unbiased, random subsets), precision
and recall (k-NN manifolds, k = 3) on the features; the Inception Score on the Inception logits (generated images,
and the real ones as a reference); and, needing no network, the pixel-space diversity: the median pairwise
distance among generated images over the same among the real ones (about 1 for generated images as varied as real
ones, far below 1 for a collapsed generator; recall's feature-free companion). The sample counts are reported
beside every number, and a warning is recorded when FID uses fewer than 2,048 images on a side (FID is biased
upward at small N, so such values only compare with values at the same N).

Precision/recall here use the chosen feature network (Inception pool3 or the domain classifier). Kynkaanniemi et
al. and torch-fidelity use VGG-16 features by default, so the values are comparable in kind, not in number, with
papers that report VGG-16 precision/recall.

The memorisation audit (``audit.py``): for every generated image its nearest real training image, in pixel space
(64x64, area downsampled, RMS difference minimised over translations of up to ±4 px) and in feature space, against
the same distance for every real held-out image (``--real`` and, from the same dataset file, its val and test
splits: patients the generator never saw). A generated image closer to a training image than the 1st percentile of
held-out-to-train distances counts as a near-copy (``near_copies``, ``near_copy_threshold``: pixel space;
``*_features``: feature space), each with a bootstrap interval over the held-out images (``*_ci95``). Held-out
real images fall under the threshold 1% of the time by construction, so about 1% of generated images can be flagged
without any copying; many more than that, or a closest-pairs grid of visibly identical images, is the warning sign.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import options, runtime
from ..cli import ProgressFn, no_progress
from ..data.datasetfile import generated_by, parse_ref, shared_patient
from ..data.pixels import pixel_images
from ..data.reader import H5ImageDataset
from ..errors import UserError
from ..faults import kill_point
from ..fileio import Staging, check_output_path, write_json_atomic
from . import audit, scores
from .features import cached_features, default_cache_dir, feature_net

FID_MIN_N = 2048
IS_MIN_N = 5000


@dataclass
class QualityConfig:
    real: str
    fake: str = "outputs/synthetic.h5"
    out: str = "outputs/metrics/fid_is.json"
    features: str = "inception"
    inception_weights: str | None = None
    train: str | None = None
    audit: bool = True
    per_class: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    k: int = 3
    is_splits: int = 10
    near_copy_quantile: float = 0.01
    cache: str | None = None  # None: the default cache folder; "" disables
    batch: int = 64
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False  # replace an existing --out

    def validate(self) -> "QualityConfig":
        options.whole_number(self, "kid_subsets", "kid_subset_size", "k", "is_splits", "batch")
        options.seed(self)
        if not isinstance(self.near_copy_quantile, (int, float)) or not 0 < self.near_copy_quantile < 1:
            raise UserError(f"--near-copy-quantile must be in (0, 1), got {self.near_copy_quantile!r}")
        check_output_path(self.out, self.overwrite, inputs=self.input_paths(), suffixes=(".json",))
        return self

    def input_paths(self) -> dict:
        features = str(self.features)
        network_file = features.partition(":")[2] or None
        return {"--real": parse_ref(str(self.real), "")[0], "--fake": parse_ref(str(self.fake), "")[0],
                "--train": parse_ref(str(self.train), "")[0] if self.train else None,
                "--inception-weights": self.inception_weights, "--features": network_file}

    def output_paths(self) -> dict:
        return {"--out": self.out}


# ----------------------------------------------------------------------------------------------------------------
# The metrics of one pair of image sets: one row each. A row computes its values from the features (and Inception
# logits) of the real and generated sets, or returns None when they do not allow it; its ``keys`` are then None.


@dataclass
class ImageSets:
    real: np.ndarray  # features (n_real, d)
    fake: np.ndarray
    real_logits: np.ndarray  # (n_real, classes); (n_real, 0) for networks without logits
    fake_logits: np.ndarray
    real_pixels: np.ndarray  # (n_real, side*side) in [0, 1], area-downsampled to at most 64x64
    fake_pixels: np.ndarray


@dataclass(frozen=True)
class Column:
    """How tables show a metric: the report's column (its title, and its cell from one set's values) and the value
    fid_is's summary table shows under ``key``."""
    title: str
    key: str
    cell: Callable[[dict], str]


def number(key: str, fmt: str) -> Callable[[dict], str]:
    """A cell showing ``key`` in ``fmt`` ("–" when missing; a value that is not a float as it is)."""
    def cell(values: dict) -> str:
        v = values.get(key)
        return "–" if v is None else format(v, fmt) if isinstance(v, float) else str(v)

    return cell


def _kid_cell(s: dict) -> str:
    return "–" if s.get("kid_mean") is None else f"{s['kid_mean']:.4g} ± {s['kid_std']:.2g}"


def _is_cell(s: dict) -> str:
    """The Inception Score ± its sd over splits, the real images' own score in brackets."""
    if s.get("is_mean") is None:
        return "–"
    real = f" ({s['is_real_mean']:.3f})" if s.get("is_real_mean") is not None else ""
    return f"{s['is_mean']:.3f} ± {s['is_std']:.3f}{real}"


@dataclass(frozen=True)
class SetMetric:
    keys: tuple[str, ...]  # its main values (None when it cannot be computed)
    compute: Callable[[ImageSets, "QualityConfig"], dict | None]
    columns: tuple[Column, ...] = ()  # how the report and fid_is's summary show it
    snapshot: tuple[tuple[str, str], ...] = ()  # (metrics.csv column, key): what training-time snapshots record
    feature_free: bool = False  # computed on pixels, so snapshots record it even without a feature network


def _fid(s: ImageSets, cfg) -> dict:
    return {"fid": scores.fid(s.real, s.fake)}


def _kid(s: ImageSets, cfg) -> dict:
    mean, std = scores.kid(s.real, s.fake, cfg.kid_subsets, cfg.kid_subset_size, seed=cfg.seed)
    return {"kid_mean": mean, "kid_std": std, "kid_subset_size": min(cfg.kid_subset_size, len(s.real), len(s.fake))}


def _precision_recall(s: ImageSets, cfg) -> dict | None:
    if min(len(s.real), len(s.fake)) <= cfg.k:
        return None
    precision, recall = scores.precision_recall(s.real, s.fake, cfg.k)
    return {"precision": precision, "recall": recall}


def _pixel_diversity(s: ImageSets, cfg) -> dict:
    """Median pairwise pixel distance among generated images over the same among real ones: about 1 when the
    generated images vary as much as real ones, far below 1 for a collapsed generator. Feature-free."""
    fake = scores.median_pairwise_distance(s.fake_pixels, seed=cfg.seed)
    real = scores.median_pairwise_distance(s.real_pixels, seed=cfg.seed)
    return {"pixel_diversity": fake / real if real > 0 else None, "pixel_spread_fake": fake,
            "pixel_spread_real": real}


def _inception_score(s: ImageSets, cfg) -> dict | None:
    if s.fake_logits.shape[1] == 0 or len(s.fake) < cfg.is_splits:
        return None
    out = dict(zip(("is_mean", "is_std"), scores.inception_score(s.fake_logits, cfg.is_splits, seed=cfg.seed)))
    real = scores.inception_score(s.real_logits, cfg.is_splits, seed=cfg.seed) if len(s.real) >= cfg.is_splits \
        else (None, None)
    return {**out, "is_real_mean": real[0], "is_real_std": real[1]}  # the real images' own score, for reference


SET_METRICS = (
    SetMetric(("fid",), _fid, (Column("FID", "fid", number("fid", ".2f")),)),
    SetMetric(("kid_mean", "kid_std"), _kid, (Column("KID", "kid_mean", _kid_cell),), snapshot=(("kid", "kid_mean"),)),
    SetMetric(("precision", "recall"), _precision_recall,
              (Column("precision", "precision", number("precision", ".3f")),
               Column("recall", "recall", number("recall", ".3f"))),
              snapshot=(("precision", "precision"), ("recall", "recall"))),
    SetMetric(("pixel_diversity",), _pixel_diversity,
              (Column("pixel diversity", "pixel_diversity", number("pixel_diversity", ".3f")),),
              snapshot=(("pixel_diversity", "pixel_diversity"),), feature_free=True),
    SetMetric(("is_mean", "is_std"), _inception_score, (Column("IS", "is_mean", _is_cell),)),
)


def metric_columns() -> list[Column]:
    """Every table column of the SET_METRICS rows, in order (the report's Table 2, fid_is's summary)."""
    return [c for metric in SET_METRICS for c in metric.columns]


def snapshot_columns(with_features: bool = True) -> list[tuple[str, str]]:
    """(metrics.csv column, key) of every metric training-time snapshots record (generative/snapshots.py); without
    a feature network only the feature-free ones."""
    return [pair for metric in SET_METRICS if with_features or metric.feature_free for pair in metric.snapshot]


def set_metrics(sets: ImageSets, cfg: QualityConfig) -> dict:
    """Every metric for one pair of image sets, with the counts they rest on."""
    out = {"n_real": len(sets.real), "n_fake": len(sets.fake)}
    computable = min(len(sets.real), len(sets.fake)) >= 2
    for metric in SET_METRICS:
        values = metric.compute(sets, cfg) if computable else None
        out.update(values if values is not None else {k: None for k in metric.keys})
    return out


def _open(ref: str, default_split: str, flag: str) -> H5ImageDataset:
    path, split = parse_ref(ref, default_split)
    if not Path(path).is_file():
        raise UserError(f"{flag} {path}: no such file")
    return H5ImageDataset(path, split)


def check_inputs(cfg: QualityConfig, real: H5ImageDataset, fake: H5ImageDataset, train: H5ImageDataset | None):
    """Refuse sets that cannot be compared: other sizes or classes, too few images for --k, or an audit whose
    held-out real images share patients with its training images."""
    if train is not None and Path(train.path).resolve() == Path(real.path).resolve() and train.split == real.split:
        raise UserError(f"--real {cfg.real} is the training split itself; the audit compares against held-out real "
                        "images, so pass --real FILE.h5:test (or val), or --noaudit")
    for other, flag in ((fake, "--fake"), (train, "--train")):
        if other is not None and other.size != real.size:  # features of different resolutions are not comparable
            raise UserError(f"{flag} {other.path} holds {other.size}x{other.size} images but --real {real.path} "
                            f"holds {real.size}x{real.size}; compare images of one size (make_hdf5 --size, or "
                            "sample from a GAN trained at that size)")
    unknown = sorted(set(fake.classes) - set(real.classes))
    if unknown:
        raise UserError(f"--fake has classes {unknown} that --real ({real.classes}) does not; compare matching files")
    if cfg.k >= min(len(real), len(fake)):
        raise UserError(f"--k {cfg.k} needs more than {cfg.k} images on each side for precision and recall, but "
                        f"--real has {len(real)} and --fake {len(fake)}; lower --k (default 3) or give more images")
    if train is not None and train.patient_ids is not None and real.patient_ids is not None:
        clash = shared_patient({f"--train {train.path}:{train.split}": train.patient_ids,
                                f"--real {real.path}:{real.split}": real.patient_ids})
        if clash:
            raise UserError(f"{clash}: the audit needs held-out real images of other patients than the training "
                            "images; give --real and --train from one patient-level split (or --noaudit)")


def evaluate(cfg: QualityConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Compute everything, write ``cfg.out`` (JSON) and the audit figures beside it; return the summary."""
    cfg.validate()
    real = _open(cfg.real, "test", "--real")
    fake = _open(cfg.fake, "synthetic", "--fake")
    train = _open(cfg.train or f"{real.path}:train", "train", "--train") if cfg.audit else None
    check_inputs(cfg, real, fake, train)
    net = feature_net(cfg.features, cfg.inception_weights, cfg.device)
    cache = None if cfg.cache == "" else (cfg.cache or default_cache_dir())

    def features_of(ds: H5ImageDataset, label: str):
        f, lg, _ = cached_features(net, ds, cache, cfg.batch, progress(f"{label} ({ds.split})", len(ds)))
        return f, lg

    real_f, real_lg = features_of(real, "real")
    fake_f, fake_lg = features_of(fake, "generated")
    kill_point("fid_is:features-computed")
    side = min(64, real.size, fake.size)
    real_px, fake_px = (audit.pixel_vectors(ds.read_uint8(np.arange(len(ds))), side) for ds in (real, fake))
    summary = set_metrics(ImageSets(real_f, fake_f, real_lg, fake_lg, real_px, fake_px), cfg)
    summary["per_class"] = {}
    if cfg.per_class:
        for c, name in enumerate(fake.classes):
            if not (fake.labels == c).any():
                continue
            rc = real.classes.index(name)
            r, f = real.labels == rc, fake.labels == c
            summary["per_class"][name] = set_metrics(
                ImageSets(real_f[r], fake_f[f], real_lg[r], fake_lg[f], real_px[r], fake_px[f]), cfg)
    warnings = []
    for scope, m in [("overall", summary), *summary["per_class"].items()]:
        if min(m["n_real"], m["n_fake"]) < FID_MIN_N:
            warnings.append(f"{scope}: FID from {m['n_real']} real and {m['n_fake']} generated images (< {FID_MIN_N} "
                            "per side) is biased upward; compare only with FIDs at the same counts")
        if m.get("precision") is None and min(m["n_real"], m["n_fake"]) >= 2:
            warnings.append(f"{scope}: no precision or recall: they need more than --k {cfg.k} images per side "
                            f"({m['n_real']} real, {m['n_fake']} generated)")
        if m.get("is_mean") is not None and m["n_fake"] < IS_MIN_N:
            warnings.append(f"{scope}: Inception Score from {m['n_fake']} generated images in {cfg.is_splits} splits "
                            f"(< {IS_MIN_N}; the standard is 50,000) is biased low and noisy; compare only at the same "
                            "count")
    summary["warnings"] = warnings
    summary["features"] = {"network": net.name, "description": net.description, "key": net.key,
                           "dim": int(real_f.shape[1])}
    out = Path(cfg.out)
    with Staging() as staged:  # the audit's figures appear with the json, not before it
        if train is not None:
            train_f, train_lg = features_of(train, "real training")
            summary["real_reference"] = real_reference(real, train, real_f, real_lg, real_px, train_f, train_lg,
                                                       fake.classes, side, cfg)
            summary.update(run_audit(real, fake, train, real_f, fake_f, train_f, cfg, out, features_of,
                                     runtime.resolve_device(cfg.device), staged))
        _record_inputs(summary, real, fake, cfg, call_args)
        kill_point("fid_is:before-writing")
        staged.publish()
        write_json_atomic(out, summary)
    return summary


def real_reference(real, train, real_f, real_lg, real_px, train_f, train_lg, classes, side: int,
                   cfg: QualityConfig) -> dict:
    """The same metrics with the real training images in the generated images' place: what real radiographs of
    other patients score against ``real`` in this feature space, the yardstick for a generator's numbers (in a
    weak feature space even real images score low precision). Fewer images than the generated set usually,
    so its recall is a little lower than the same images would get at the generated set's N."""
    train_px = audit.pixel_vectors(train.read_uint8(np.arange(len(train))), side)
    out = set_metrics(ImageSets(real_f, train_f, real_lg, train_lg, real_px, train_px), cfg)
    out["set"] = f"{train.path}:{train.split}"
    out["per_class"] = {}
    for name in classes:
        if name not in real.classes or name not in train.classes:
            continue
        r, t = real.labels == real.classes.index(name), train.labels == train.classes.index(name)
        if t.any():
            out["per_class"][name] = set_metrics(ImageSets(real_f[r], train_f[t], real_lg[r], train_lg[t],
                                                           real_px[r], train_px[t]), cfg)
    return out


def _record_inputs(summary: dict, real, fake, cfg: QualityConfig, call_args: dict | None) -> None:
    summary["real"] = {"file": real.path, "split": real.split, "content_sha256": real.info.attrs.get("content_sha256")}
    summary["fake"] = {"file": fake.path, "split": fake.split, "content_sha256": fake.info.attrs.get("content_sha256"),
                       "recipe": generated_by(fake.info.attrs)}
    summary["config"] = asdict(cfg)
    summary["args"] = call_args or {}
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def held_out_sets(real: H5ImageDataset, train: H5ImageDataset) -> list[H5ImageDataset]:
    """The real images the generator never saw: ``real`` plus, when ``real`` is a split of a cxrgan dataset, that
    file's other held-out splits (val and test), so the near-copy threshold rests on as many images as there are."""
    sets = [real]
    same_file = Path(real.path).resolve() == Path(train.path).resolve()
    for split in ("val", "test"):
        if split in real.info.splits and split != real.split and not (same_file and split == train.split):
            sets.append(H5ImageDataset(real.path, split))
    return sets


def run_audit(real, fake, train, real_f, fake_f, train_f, cfg: QualityConfig, out: Path, features_of=None,
              device="cpu", staged: Staging | None = None) -> dict:
    """Near-copy counts in pixel space (shift-tolerant) and feature space, the threshold from every held-out real
    image (``held_out_sets``); figures beside ``out`` (under temp names in ``staged``, when given, until it
    publishes them)."""
    where = staged.path if staged is not None else Path
    side = min(64, real.size, fake.size, train.size)
    held = held_out_sets(real, train)
    held_f = np.concatenate([real_f] + [features_of(ds, "real held-out")[0] for ds in held[1:]])
    fake_img, train_img = (ds.read_uint8(np.arange(len(ds))) for ds in (fake, train))
    held_img = np.concatenate([ds.read_uint8(np.arange(len(ds))) for ds in held])
    spaces = {"pixels": ([pixel_images(x, side) for x in (fake_img, train_img, held_img)],
                         audit.default_max_shift(side)),
              "features": ([fake_f, train_f, held_f], None)}
    result, figures = {}, {}
    for space, ((f, t, r), max_shift) in spaces.items():
        a = audit.audit_space(f, t, r, cfg.near_copy_quantile, max_shift, seed=cfg.seed, device=device)
        suffix = "" if space == "pixels" else "_features"
        for key in ("near_copies", "near_copy_threshold", "near_copies_ci95", "near_copy_threshold_ci95"):
            result[f"{key}{suffix}"] = a[key]
        result[f"audit_{space}"] = {k: v for k, v in a.items() if not isinstance(v, np.ndarray)}
        png = out.with_name(f"{out.stem}-closest-{space}.png")
        audit.closest_pairs_figure(where(png), fake_img, train_img, a, k=8,
                                   title=f"closest generated/training pairs ({space})")
        figures[f"closest_{space}"] = png.name
        hist = out.with_name(f"{out.stem}-audit-{space}.png")
        audit.distance_histogram(where(hist), a, f"nearest real training image, {space}")
        figures[f"audit_{space}"] = hist.name
    held_names = " + ".join(f"{ds.split} ({len(ds)})" for ds in held)
    result["near_copy_rule"] = (f"closer to a training image than the {cfg.near_copy_quantile:g} quantile of held-out "
                                f"real ({held_names}) to training distances; pixels: RMS difference over translations "
                                f"up to ±{audit.default_max_shift(side)} px at {side}x{side}")
    result["train"] = {"file": train.path, "split": train.split, "n": len(train),
                       "content_sha256": train.info.attrs.get("content_sha256")}
    result["figures"] = figures
    return result
