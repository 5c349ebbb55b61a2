"""Files that are never half-written: write to a temp file beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from .errors import UserError


def temp_path_for(final: Path) -> Path:
    """A temp name in the same directory (so the rename is atomic), unique per process."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def remove_stale_temps(final: Path) -> None:
    """Delete temp files left by killed runs (their process no longer exists)."""
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        pid = stale.name[len(final.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_path(final: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """Validate an output path before any work is done."""
    final = Path(final)
    if final.is_dir():
        raise UserError(f"{flag} {final} is a directory; give a file path")
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists; pass --overwrite to replace it, or choose another {flag}")
    return final


@contextlib.contextmanager
def atomic_output(final: str | Path) -> Iterator[Path]:
    """Yield a temp path; on success rename it onto ``final``, on any failure delete it.

    ``final`` keeps its previous content until the rename, so a failed or interrupted run loses nothing.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = temp_path_for(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, obj) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
