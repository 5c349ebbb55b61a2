"""Checkpoint and weight files: plain dicts of tensors, numbers and strings (no pickled objects), written
atomically and loaded with ``torch.load(weights_only=True)``, so a file carrying arbitrary Python objects is
refused. A checkpoint also stores a digest of its tensors (``TENSORS_DIGEST``), checked when it is loaded, so a
file edited after it was written (one weight overwritten, say) is refused instead of silently used. Also the
random-number-generator states a training checkpoint carries to resume exactly."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import UserError
from .fileio import atomic_output


TENSORS_DIGEST = "tensors_sha256"


def save(obj: dict, path: str | Path, digest: str | None = None) -> None:
    """Write ``obj`` atomically, with its digest (``tensors_digest``, computed unless given) under
    ``TENSORS_DIGEST``."""
    with atomic_output(path) as tmp:
        torch.save({**obj, TENSORS_DIGEST: digest or tensors_digest(obj)}, tmp)


def tensors_digest(obj) -> str:
    """SHA-256 over a nest of dicts and lists: every tensor's place in the nest, dtype, shape and bytes, and every
    plain value's place, type and repr."""
    h = hashlib.sha256()

    def walk(x, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                if k != TENSORS_DIGEST:
                    walk(x[k], f"{where}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{where}/{i}")
        else:  # plain values (counters, config, class names) are covered too
            h.update(f"{where}={type(x).__name__}:{x!r}|".encode())

    walk(obj, "")
    return h.hexdigest()


def load(path: str | Path, map_location="cpu", what: str = "checkpoint") -> dict:
    """``torch.load(weights_only=True)`` with one-line errors naming ``what`` the file was meant to be; a file that
    carries a tensors digest must match it (files from other programs, e.g. downloaded weights, carry none)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty (0 bytes): an interrupted copy? Use another file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a pickle of Python objects, which weights_only refuses to run
            raise UserError(f"{what} {path} holds objects other than tensors and plain values; refusing to load "
                            "it") from None
        raise UserError(f"{what} {path} is damaged or not a {what}") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{what} {path} is damaged or not a {what} ({_first_line(e)})") from None
    if isinstance(obj, dict) and TENSORS_DIGEST in obj:
        if obj[TENSORS_DIGEST] != tensors_digest(obj):
            raise UserError(f"{what} {path} was modified after it was written (its content no longer matches the "
                            "digest stored with it); use an intact copy")
    return obj


def _first_line(e: Exception) -> str:
    """The first sentence of an exception's message (torch's go on for several lines of advice)."""
    line = (str(e).splitlines() or [type(e).__name__])[0]
    return line.split(". ")[0].rstrip(".")[:200]


def check_finite(state: dict, path: str | Path, what: str = "checkpoint") -> None:
    """Refuse weights with NaN or infinity (a diverged run, or a damaged file)."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(f"{what} {path}: weight {name} holds NaN or infinity (a diverged run or a damaged "
                            "file); use an earlier checkpoint or retrain")


@contextlib.contextmanager
def rebuilding(path: str | Path, what: str = "checkpoint") -> Iterator[None]:
    """Rebuilding a model from a file whose format tag is right but whose content is not (missing keys, wrong
    shapes or types) ends in a one-line error instead of a traceback."""
    try:
        yield
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else _first_line(e)
        raise UserError(f"{what} {path} has the right format tag but malformed content ({detail}); it was not "
                        "written by this cxrgan, or was damaged") from None


def rng_state() -> dict:
    """Every random number generator the training loop may touch, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
