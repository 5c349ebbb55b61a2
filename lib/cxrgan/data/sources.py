"""Finding input images: loose files anywhere under a directory, the official .tar.gz archives read in place
(streaming, never extracted), and class-folder layouts ``ROOT/<class>/*.png``."""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from .imaging import IMAGE_SUFFIXES, MAX_IMAGE_BYTES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class Scan:
    images: dict[str, Path] = field(default_factory=dict)  # file name -> path (first one wins)
    duplicates: list[str] = field(default_factory=list)  # paths whose file name was already taken
    archives: list[Path] = field(default_factory=list)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def scan(root: Path) -> Scan:
    """Every image file and archive under ``root``, in sorted (deterministic) order; hidden entries skipped."""
    out = Scan()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            if is_image(fn):
                if fn in out.images:
                    out.duplicates.append(str(p))
                else:
                    out.images[fn] = p
            elif is_archive(fn):
                out.archives.append(p)
    return out


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``ROOT/<class>/**/image`` -> {class folder name: sorted image paths}; folders without images are ignored."""
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image(p.name) and not p.name.startswith("."))
        if files:
            out[d.name] = files
    return out


def unsafe_member(name: str) -> str | None:
    """Why an archive member name is refused (absolute path or a ``..`` component), or None if it is safe."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' in path"
    return None


@dataclass
class ArchiveEvent:
    """One thing met while streaming an archive: a wanted member's bytes, a refused member, or a broken archive."""

    archive: Path
    member: str
    data: bytes | None = None
    refused: str | None = None
    error: str | None = None


def stream_archive(path: Path, wanted: set[str]) -> Iterator[ArchiveEvent]:
    """Read ``path`` front to back (gzip or plain tar) and yield the regular members whose file name is in
    ``wanted``. Unsafe member names are refused and never read. A corrupt archive ends with an error event."""
    member_name = ""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                member_name = member.name
                reason = unsafe_member(member.name)
                if reason:
                    yield ArchiveEvent(path, member.name, refused=reason)
                    continue
                if not member.isfile():
                    continue
                base = PurePosixPath(member.name.replace("\\", "/")).name
                if base in wanted and member.size > MAX_IMAGE_BYTES:  # never read into memory
                    yield ArchiveEvent(path, base, refused=f"{member.size / 2**20:.0f} MB, over the "
                                       f"{MAX_IMAGE_BYTES >> 20} MB limit for one radiograph")
                    continue
                if base in wanted:
                    fh = tar.extractfile(member)
                    yield ArchiveEvent(path, base, data=fh.read() if fh else b"")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        yield ArchiveEvent(path, member_name, error=f"archive unreadable after {member_name!r}: {e}")
