"""Files that are never half-written: write to a temp file beside the target, then rename."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from .errors import UserError


H5_SUFFIXES = (".h5", ".hdf5")


def temp_path_for(final: Path) -> Path:
    """A temp name in the same directory (so the rename is atomic), unique per process."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def remove_stale_temps(final: Path) -> None:
    """Delete temp files left by killed runs (their process no longer exists)."""
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        pid = stale.name[len(final.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


def remove_stale_temps_in(folder: Path) -> None:
    """Delete every temp file in ``folder`` (``.NAME.PID.tmp``) whose process no longer exists."""
    for stale in folder.glob(".*.tmp"):
        pid = stale.name[:-len(".tmp")].rpartition(".")[2]
        if stale.is_file() and pid.isdigit() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` exist (perhaps as another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_path(final: str | Path, overwrite: bool, flag: str = "--out", inputs: dict | None = None,
                      suffixes: tuple[str, ...] = ()) -> Path:
    """Validate an output path before any work is done: a file name ending in one of ``suffixes`` (so it cannot
    name an image, csv or checkpoint the run reads), not a directory, never one of the run's own ``inputs``
    ({flag: path or paths}), not an existing file unless ``overwrite``, in a folder this user can write."""
    final = Path(final)
    if suffixes and final.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {final}: the file name must end in {' or '.join(suffixes)}")
    if final.is_dir():
        raise UserError(f"{flag} {final} is a directory; give a file path")
    check_not_an_input(final, inputs or {}, flag)
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists; pass --overwrite to replace it, or choose another {flag}")
    check_writable(final.parent, flag)
    return final


def check_not_an_input(out: str | Path, inputs: dict, flag: str = "--out") -> None:
    """Refuse an output path that is one of the run's inputs ({flag: path or list of paths}; None entries are
    skipped): writing it would destroy what the run reads."""
    out = Path(str(out))
    for in_flag, paths in inputs.items():
        for p in [paths] if isinstance(paths, (str, Path)) else paths or []:
            if p is not None and _same_path(out, Path(str(p))):
                raise UserError(f"{flag} {out} is also an input of this run ({in_flag} {p}); choose another {flag}")


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also catches hard and symbolic links
    return a.resolve() == b.resolve()


def check_writable(folder: str | Path, flag: str = "--out") -> None:
    """The nearest existing folder on the way to ``folder`` must be writable (it is created later if missing)."""
    folder = Path(folder).resolve()
    existing = next((f for f in (folder, *folder.parents) if f.exists()), None)
    if existing is None or not existing.is_dir():
        raise UserError(f"{flag}: {existing} is not a folder; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: cannot write in {existing} (permission denied or read-only); choose another {flag}")


def check_free_space(folder: str | Path, need_bytes: int, what: str) -> None:
    """Refuse long work whose output would not fit on the disk (checked before, not discovered after an hour)."""
    folder = Path(folder).resolve()
    existing = next((f for f in (folder, *folder.parents) if f.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if need_bytes > free:
        raise UserError(f"{what} needs about {_size(need_bytes)} in {existing}, which has {_size(free)} free; free "
                        "some disk space, write elsewhere or ask for less")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


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


class Staging:
    """Files a run writes under temp names beside their final paths (``path(final)``) while it computes, renamed
    onto them together (``publish``) once everything is done: an interrupted run leaves the earlier files as they
    were, never some new beside some old. Leaving the ``with`` block deletes whatever was not published."""

    def __init__(self) -> None:
        self.pending: dict[Path, Path] = {}
        self.created: list[Path] = []  # folders made for the temp files: removed again if a failed run left them empty

    def path(self, final: str | Path) -> Path:
        final = Path(final)
        self.created += [d for d in (final.parent, *final.parent.parents) if not d.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final)
        self.pending[final] = temp_path_for(final)
        return self.pending[final]

    def publish(self) -> None:
        for final, tmp in self.pending.items():
            os.replace(tmp, final)
        self.pending.clear()

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        for tmp in self.pending.values():
            tmp.unlink(missing_ok=True)
        if self.pending:
            _remove_empty(self.created)
        self.pending.clear()


@contextlib.contextmanager
def output_lock(final: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on an output path (a file, or a run folder) for a whole run, so that two runs writing
    the same output cannot both succeed with one silently replacing the other: the second is refused at once.

    The lock is ``flock`` on a ``.<name>.lock`` file beside the output, released (and removed) when the block ends;
    the kernel releases it if the process dies, so a killed run never blocks the next one.
    """
    final = Path(final).resolve()  # one lock whatever the spelling: ./x, x, a symlink to it
    lock_path = final.parent / f".{final.name}.lock"
    created = [d for d in (final.parent, *final.parent.parents) if not d.exists()]  # removed again if left empty
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock_now(fd):
            os.close(fd)
            _remove_empty(created)
            raise UserError(f"another run is writing {final} right now; wait for it to finish, or choose another "
                            f"{flag}") from None
        try:  # the file we locked may have been removed by a run that just finished: then lock the new one
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(created)


def _lock_now(fd: int) -> bool:
    """An exclusive lock on ``fd`` if no other run holds one; one retry after 50 ms, for a reader that was just
    looking whether the output is being written (``check_not_being_written`` holds a shared lock for an instant)."""
    for attempt in range(2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt == 0:
                time.sleep(0.05)
    return False


def check_not_being_written(path: str | Path, flag: str) -> None:
    """Refuse to read an input that another run is writing right now (it holds ``output_lock`` on it): a file is
    replaced only when its writer finishes, so reading now would give the old content, or a mix of old and new."""
    path = Path(path).resolve()
    try:
        fd = os.open(path.parent / f".{path.name}.lock", os.O_RDONLY)
    except OSError:  # no lock file: nobody is writing it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{flag} {path}: another run is writing it right now; wait for it to finish") from None
    finally:
        os.close(fd)  # and with it the shared lock


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders (innermost first) that a failed or finished run created but left empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def write_json(path: str | Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_json_atomic(path: str | Path, obj) -> None:
    with atomic_output(path) as tmp:
        write_json(tmp, obj)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
