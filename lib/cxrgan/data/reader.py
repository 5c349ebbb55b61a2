"""Reading a dataset file as a torch Dataset: float images in [-1, 1] of shape (1, H, W), and int labels."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .datasetfile import SAMPLES_SCHEMA, SCHEMA, decode_attr, open_h5, read_info
from ..errors import UserError


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W) -> float32 (..., 1, H, W) in [-1, 1] (0 -> -1, 255 -> 1), on the tensor's device: the one
    mapping from stored pixels to every network's input (GAN, classifier, domain features)."""
    return images.unsqueeze(-3).float().div_(127.5).sub_(1.0)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``to_model_input`` of a NumPy array."""
    return to_model_input(torch.from_numpy(np.ascontiguousarray(images)))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """The inverse of ``to_tensor``: float (..., 1, H, W) in [-1, 1] -> uint8 (..., H, W), rounded."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.squeeze(-3).cpu().numpy()


class H5ImageDataset(Dataset):
    """One split of a cxrgan HDF5 file.

    Works with DataLoader workers: each process opens the file itself on first access. ``in_memory=True``
    decompresses the whole split into RAM once (uint8), which is the fast path for training when it fits.
    ``transform`` is applied to each (1, H, W) float tensor.
    """

    def __init__(self, path: str | Path, split: str = "train", in_memory: bool = False,
                 transform: Callable | None = None, schemas: tuple[str, ...] = (SCHEMA, SAMPLES_SCHEMA)):
        self.path = str(path)
        self.split = split
        self.transform = transform
        self.info = read_info(path, schemas)
        with open_h5(path, schemas) as f:
            self._check_unchanged(f)
            if split not in f:
                raise UserError(f"{path}: no split {split!r}; it has {', '.join(self.info.splits)}")
            g = f[split]
            try:
                labels = g["labels"][:]
                self.names = [n.decode() if isinstance(n, bytes) else n for n in g["names"][:]]
                self.patient_ids = g["patient_ids"][:] if "patient_ids" in g else None
                self.images = g["images"][:] if in_memory else None
            except OSError as e:  # a damaged chunk: HDF5 cannot decompress it
                raise UserError(f"{path}: split {split!r} cannot be read ({str(e).splitlines()[0][:120]}); the file "
                                "is damaged: rebuild it") from None
        bad = (labels < 0) | (labels >= len(self.info.classes))  # on the stored type: a huge uint64 stays positive
        if bad.any():
            raise UserError(f"{path}: {split}/labels holds {int(labels[bad][0])}, outside the "
                            f"{len(self.info.classes)} classes {self.info.classes}; rebuild the file")
        self.labels = labels.astype(np.int64)
        self.classes = self.info.classes
        self.size = self.info.size
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _images_ds(self) -> h5py.Dataset:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
            self._check_unchanged(self._file)
        return self._file[self.split]["images"]

    def _check_unchanged(self, f: h5py.File) -> None:
        """The file opened again (for its images, in a worker) must be the one whose labels and names were read:
        another run may have replaced it meanwhile (writers rename a complete new file onto the path)."""
        if decode_attr(f.attrs.get("content_sha256")) != self.info.attrs.get("content_sha256"):
            f.close()
            raise UserError(f"{self.path} was replaced by another run while this one was reading it; run again once "
                            "that run has finished")

    def __getstate__(self):  # a worker process opens its own handle
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def read_uint8(self, indices) -> np.ndarray:
        """Raw uint8 images (n, H, W) for any indices, in the order given."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            return self.images[idx]
        ds = self._images_ds()
        out = np.empty((len(idx), self.size, self.size), dtype=np.uint8)
        # one chunk read per image, in file order: h5py's fancy indexing (ds[list]) is ~8x slower for this layout
        for k in np.argsort(idx, kind="stable"):
            ds.read_direct(out, np.s_[idx[k]], np.s_[k])
        return out

    def __getitem__(self, i):
        """``ds[i]`` -> (float (1, H, W), int label); ``ds[list_of_indices]`` -> a whole batch
        (float (n, 1, H, W), int64 (n,)), which is what ``batch_loader`` asks for."""
        if isinstance(i, (int, np.integer)):
            x = to_tensor(self.read_uint8([i])[0])
            return (self.transform(x) if self.transform else x), int(self.labels[i])
        xs = to_tensor(self.read_uint8(i))
        if self.transform is not None:
            xs = torch.stack([self.transform(x) for x in xs])
        return xs, torch.from_numpy(self.labels[np.asarray(i, dtype=np.int64)])

    def __getitems__(self, indices):
        """Batched fetch used by a standard DataLoader (one call per batch instead of one per image)."""
        xs = to_tensor(self.read_uint8(indices))
        return [(self.transform(x) if self.transform else x, int(self.labels[i])) for x, i in zip(xs, indices)]

    def batch_loader(self, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None,
                     num_workers: int = 0, drop_last: bool = False) -> DataLoader:
        """A DataLoader that fetches each batch as one tensor (no per-image collation): the fast path."""
        order = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        return DataLoader(self, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last),
                          num_workers=num_workers, persistent_workers=num_workers > 0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
