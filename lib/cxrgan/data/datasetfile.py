"""The HDF5 dataset contract (docs/dataset-format.md): writing it, and opening it with validation.

One file per dataset; a group per split; in each group ``images`` uint8 (N, H, W), ``labels`` int64 (N,),
``names`` utf-8 (N,), and for real data ``patient_ids`` int64 (N,). Root attributes describe the whole file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from ..errors import UserError
from ..fileio import atomic_output

SCHEMA = "cxrgan-dataset/1"
SAMPLES_SCHEMA = "cxrgan-samples/1"  # generated images: one split "synthetic", no patient ids
SPLITS = ("train", "val", "test")
DEFAULT_CLASSES = ("No Finding", "Infiltration")
# gzip level 1: the same ratio as level 9 on radiographs and the fastest to write; readable by any HDF5 tool
# (measured in bench/speed/compression.py, see docs/benchmarks.md).
GZIP_LEVEL = 1
STR = h5py.string_dtype("utf-8")


def compress_image(image: np.ndarray) -> bytes:
    """Compress one uint8 image into exactly the bytes HDF5's gzip filter stores for a one-image chunk.

    Lets worker processes do the compression; the writer then stores the chunk as-is.
    """
    return zlib.compress(np.ascontiguousarray(image, dtype=np.uint8).tobytes(), GZIP_LEVEL)


def image_digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).digest()


class DatasetWriter:
    """Writes a dataset file split by split, one image at a time, with bounded memory.

    ``capacity`` is the most images each split can receive (datasets are trimmed to what was written
    on ``close``). Open it with ``write_dataset``, which writes to a temp file and renames it when complete.
    """

    def __init__(self, path: str | Path, size: int, classes, capacity: dict[str, int],
                 with_patients: bool = True, extra_text: tuple[str, ...] = (), schema: str = SCHEMA):
        self.schema = schema
        self.size = int(size)
        self.classes = list(classes)
        self.with_patients = with_patients
        self.extra_text = tuple(extra_text)
        self._file = h5py.File(path, "w")
        self._n = {s: 0 for s in capacity}
        self._meta = {s: {"labels": [], "names": [], "patient_ids": [], "digests": [], "order": [],
                          **{k: [] for k in extra_text}} for s in capacity}
        self._added = 0  # images added so far, all splits: the content hash follows this order
        self._images = {}  # split -> the images dataset (looked up once, not per image)
        try:
            for split, cap in capacity.items():
                g = self._file.create_group(split)
                self._images[split] = g.create_dataset(
                    "images", shape=(cap, size, size), maxshape=(None, size, size), dtype=np.uint8,
                    chunks=(1, size, size), compression="gzip", compression_opts=GZIP_LEVEL)
        except BaseException:
            self._file.close()
            raise

    def add(self, split: str, label: int, name: str, image: np.ndarray | None = None, *,
            compressed: bytes | None = None, digest: bytes | None = None, patient_id: int = -1, **extra: str) -> None:
        """Append one image to ``split``: either the uint8 array or its ``compress_image`` bytes plus digest."""
        if image is not None:
            if image.shape != (self.size, self.size) or image.dtype != np.uint8:
                raise ValueError(f"image must be uint8 {self.size}x{self.size}, got {image.dtype} {image.shape}")
            compressed, digest = compress_image(image), image_digest(image)
        i = self._n[split]
        ds = self._images[split]
        if i >= ds.shape[0]:
            ds.resize(i + 1, axis=0)
        ds.id.write_direct_chunk((i, 0, 0), compressed)
        self._n[split] = i + 1
        meta = self._meta[split]
        meta["labels"].append(int(label))
        meta["names"].append(str(name))
        meta["patient_ids"].append(int(patient_id))
        for k in self.extra_text:
            meta[k].append(str(extra.get(k, "")))
        meta["digests"].append(digest)
        meta["order"].append(self._added)
        self._added += 1

    def add_batch(self, split: str, labels, names, images: np.ndarray) -> None:
        """Append uint8 images (n, H, W) in one write: HDF5 compresses the chunks in C, no per-image Python work
        beyond the content hash (no patient ids or extra fields: for generated images)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 3 or images.shape[1:] != (self.size, self.size):
            raise ValueError(f"images must be uint8 (n, {self.size}, {self.size}), got {images.shape}")
        i, n = self._n[split], len(images)
        ds = self._images[split]
        if i + n > ds.shape[0]:
            ds.resize(i + n, axis=0)
        ds[i:i + n] = images
        self._n[split] = i + n
        meta = self._meta[split]
        for label, name, image in zip(labels, names, images):
            meta["labels"].append(int(label))
            meta["names"].append(str(name))
            meta["patient_ids"].append(-1)
            meta["digests"].append(image_digest(image))
            meta["order"].append(self._added)
            self._added += 1

    def keep(self, split: str, mask) -> None:
        """Drop the images of ``split`` where ``mask`` is False (e.g. to rebalance classes after some images
        failed to decode). Kept images move down, chunk by chunk, without being decompressed."""
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != self._n[split]:
            raise ValueError(f"mask has {len(mask)} entries for {self._n[split]} images")
        ds = self._images[split]
        for j, i in enumerate(np.flatnonzero(mask)):
            if i != j:
                filter_mask, chunk = ds.id.read_direct_chunk((int(i), 0, 0))
                ds.id.write_direct_chunk((j, 0, 0), chunk, filter_mask)
        self._n[split] = int(mask.sum())
        meta = self._meta[split]
        for k, values in meta.items():
            meta[k] = [v for v, m in zip(values, mask) if m]

    @property
    def added(self) -> int:
        """Images added so far, all splits."""
        return self._added

    def labels(self, split: str) -> np.ndarray:
        """Labels of the images written to ``split`` so far."""
        return np.asarray(self._meta[split]["labels"], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images written so far, per split and class name."""
        out = {}
        for split, meta in self._meta.items():
            labels = np.asarray(meta["labels"], dtype=np.int64)
            out[split] = {c: int((labels == k).sum()) for k, c in enumerate(self.classes)}
        return out

    def close(self, **attrs) -> dict:
        """Trim, write the per-image arrays and the root attributes, and close. Returns the attributes."""
        content = hashlib.sha256()
        for _, split, k in sorted((o, s, k) for s, meta in self._meta.items() for k, o in enumerate(meta["order"])):
            meta = self._meta[split]
            content.update(f"{split}\0{meta['names'][k]}\0{meta['labels'][k]}\0".encode() + meta["digests"][k])
        for split, meta in self._meta.items():
            g = self._file[split]
            g["images"].resize(self._n[split], axis=0)
            g.create_dataset("labels", data=np.asarray(meta["labels"], dtype=np.int64))
            g.create_dataset("names", data=np.asarray(meta["names"], dtype=object), dtype=STR)
            if self.with_patients:
                g.create_dataset("patient_ids", data=np.asarray(meta["patient_ids"], dtype=np.int64))
            for k in self.extra_text:
                g.create_dataset(k, data=np.asarray(meta[k], dtype=object), dtype=STR)
        root = {
            "schema": self.schema,
            "classes": self.classes,
            "size": self.size,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": self.counts(),
            "content_sha256": content.hexdigest(),
            **attrs,
        }
        for key, value in root.items():
            self._file.attrs[key] = _attr_value(value)
        self._file.close()
        return root

    def abort(self) -> None:
        """Close an unfinished file that is about to be deleted; a failure to close it (the disk that just filled up)
        must not hide the error that caused the abort."""
        if self._file:
            try:
                self._file.close()
            except (OSError, RuntimeError):
                pass

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """On an error, close the file unfinished (the caller's temp file is then deleted, see ``write_dataset``)."""
        finished = not self._file.id.valid  # close() ran
        if exc_type is not None or not finished:
            self.abort()
        if exc_type is None and not finished:
            raise RuntimeError("DatasetWriter left without close(): the file is incomplete")


@contextlib.contextmanager
def write_dataset(final: str | Path, size: int, classes, capacity: dict[str, int], **kwargs) -> Iterator[DatasetWriter]:
    """A ``DatasetWriter`` on a temp file beside ``final``, renamed onto ``final`` only when the block ends after
    ``close(**attrs)``; on any error (or Ctrl-C) the temp file is deleted and ``final`` keeps its old content."""
    with atomic_output(final) as tmp, DatasetWriter(tmp, size, classes, capacity, **kwargs) as writer:
        yield writer


def _attr_value(value):
    """Attributes: strings and numbers as themselves, lists of strings as string arrays, the rest as JSON."""
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.asarray(value, dtype=STR)
    return json.dumps(value, sort_keys=False, default=str)


@dataclass
class DatasetInfo:
    """The root attributes of a dataset file, decoded."""

    path: Path
    schema: str
    classes: list[str]
    size: int
    splits: list[str]
    counts: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


def open_h5(path: str | Path, schemas: tuple[str, ...] = (SCHEMA,)) -> h5py.File:
    """Open a cxrgan HDF5 file read-only, refusing anything whose ``schema`` this version does not know."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; build a dataset with tools/make_hdf5.py or tools/make_phantoms.py")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({e}); rebuild it with tools/make_hdf5.py") from None
    schema = f.attrs.get("schema")
    if isinstance(schema, bytes):
        schema = schema.decode()
    if schema not in schemas:
        f.close()
        raise UserError(f"{path}: schema {schema!r} is not one this cxrgan reads ({', '.join(schemas)}); "
                        "rebuild the file with this version's tools")
    problem = contract_problem(f)
    if problem:
        f.close()
        raise UserError(f"{path}: {problem}, so it does not follow the {schema} contract (docs/dataset-format.md); "
                        "rebuild it with this version's tools")
    return f


def contract_problem(f: h5py.File) -> str | None:
    """What makes an open file break the contract (metadata only: attributes, dataset names, dtypes and shapes),
    or None. Checked whenever a file is opened, so a damaged or hand-made file fails with one line up front."""
    classes, size = f.attrs.get("classes"), f.attrs.get("size")
    if classes is None or size is None:
        return f"root attribute {'classes' if classes is None else 'size'!r} is missing"
    if np.ndim(classes) != 1 or len(classes) < 1:
        return "root attribute 'classes' is not a list of class names"
    not_names = [c for c in np.asarray(classes).tolist() if not isinstance(c, (str, bytes)) or not str(c).strip()]
    if not_names:
        return f"root attribute 'classes' holds {not_names[0]!r}, not a class name (text)"
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= 1 << 14:
        return f"root attribute 'size' is {size!r}, not an image side in pixels"
    groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
    if not groups:
        return "it has no split groups (train, val, test or synthetic)"
    for split in groups:
        g = f[split]
        for name in ("images", "labels", "names"):
            if not isinstance(g.get(name), h5py.Dataset):
                return f"split {split!r} has no dataset {name!r}"
        images, n = g["images"], g["images"].shape[0] if g["images"].ndim else -1
        if images.dtype != np.uint8 or images.shape[1:] != (size, size):
            return f"{split}/images is {images.dtype} {images.shape}, not uint8 (N, {size}, {size})"
        if g["labels"].dtype.kind not in "iu":
            return f"{split}/labels is {g['labels'].dtype}, not integers"
        for name in ("labels", "names", "patient_ids"):
            if name in g and g[name].shape != (n,):
                return f"{split}/{name} has shape {g[name].shape}, but {split}/images holds {n} images"
    return shared_patient({split: f[split]["patient_ids"][:] for split in groups if "patient_ids" in f[split]})


def shared_patient(patient_ids: dict[str, np.ndarray]) -> str | None:
    """A patient whose images are in two of the given sets ({name: patient ids}; negative ids mean "unknown"),
    described, or None. Patient-level splits are what keep a test set's patients out of training."""
    earlier: list[tuple[str, np.ndarray]] = []
    for name, ids in patient_ids.items():
        ids = np.unique(np.asarray(ids))
        ids = ids[ids >= 0]
        for other, other_ids in earlier:
            both = np.intersect1d(ids, other_ids, assume_unique=True)
            if len(both):
                shared = f"{len(both)} patient{'s' if len(both) > 1 else ''} shared"
                return f"patient {int(both[0])} has images in both {other} and {name} ({shared})"
        earlier.append((name, ids))
    return None


def read_info(path: str | Path, schemas: tuple[str, ...] = (SCHEMA,)) -> DatasetInfo:
    with open_h5(path, schemas) as f:
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        splits = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
    return DatasetInfo(path=Path(path), schema=attrs["schema"], classes=list(attrs["classes"]), size=int(attrs["size"]),
                       splits=splits, counts=attrs.get("counts", {}), attrs=attrs)


def decode_attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        return [x.decode() if isinstance(x, bytes) else x for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def generated_by(attrs: dict) -> str | None:
    """The recipe(s) a samples file's images come from (sample.py records them), e.g. "limited" or "diffusion";
    None for a file of real images."""
    recipe = attrs.get("recipe")
    return None if recipe is None else "+".join(recipe) if isinstance(recipe, list) else str(recipe)


def parse_ref(ref: str, default_split: str) -> tuple[str, str]:
    """``FILE.h5[:split]`` -> (file, split)."""
    path, sep, split = str(ref).rpartition(":")
    if sep and split and not split.startswith(("/", "\\")) and path:
        return path, split
    return str(ref), default_split
