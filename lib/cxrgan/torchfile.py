"""Checkpoint and weight files: plain dicts of tensors, numbers and strings (no pickled objects), written
atomically and loaded with ``torch.load(weights_only=True)``, so a file carrying arbitrary Python objects is
refused. Also the random-number-generator states a training checkpoint carries to resume exactly."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .fileio import atomic_output


def save(obj: dict, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, map_location="cpu", what: str = "checkpoint") -> dict:
    """``torch.load(weights_only=True)`` with one-line errors naming ``what`` the file was meant to be."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a pickle of Python objects, which weights_only refuses to run
            raise UserError(f"{what} {path} holds objects other than tensors and plain values; refusing to load "
                            "it") from None
        raise UserError(f"{what} {path} is damaged or not a {what}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{what} {path} is damaged or not a {what} ({str(e).splitlines()[0]})") from None


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
