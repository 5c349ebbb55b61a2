"""The NIH ChestX-ray14 release: which files it has, where they are, and a resumable, verifying downloader.

The only place the release URLs live. What NIH publishes, and what it does not:

- The 12 image archives images_001.tar.gz ... images_012.tar.gz have direct links (those of NIH's
  batch_download_zips.py, listed below).
- Data_Entry_2017_v2020.csv, train_val_list.txt and test_list.txt have no published direct link; they are only in
  the Box folder BOX_FOLDER, which needs a browser. Without a mirror they cannot be fetched automatically and must
  be put into the output folder by hand.
- NIH publishes no checksums, for any file. A download is therefore checked by its size (the server's
  Content-Length / Content-Range total), and by MD5 only where one is known: from CHECKSUMS below (empty until a
  maintainer fills it in from a download they trust) or from a mirror's MD5SUMS file, which takes precedence.

One file is fetched with urllib (stdlib) into NAME.part beside NAME and renamed to NAME only after it verified, so a
file under its final name is always complete. A NAME.part left by a dropped connection or an earlier run is resumed
with an HTTP Range request (a server that ignores Range is answered by starting again from zero). Connection errors,
dropped connections and 5xx answers are retried with exponential backoff, at most --retries times per file in all and
within --deadline seconds. A received file is checked for what it must be (a complete gzip stream holding a tar
archive; a csv with NIH's header; a list of image names), since a server that announces no size can cut a body short
unnoticed, and a sign-in page can arrive under any content type. A file that fails verification (MD5 mismatch, too
many bytes, wrong or cut-short content) is deleted, NAME.part included, because resuming it could never fix it; a
file that is merely incomplete keeps its NAME.part.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..cli import ProgressFn, no_progress
from ..errors import UserError
from ..fileio import write_json_atomic

BOX_FOLDER = "https://nihcc.app.box.com/v/ChestXray-NIHCC"

# images_001.tar.gz ... images_012.tar.gz, in order (NIH's batch_download_zips.py).
IMAGE_URLS = (
    "https://nihcc.box.com/shared/static/vfk49d74nhbxq3nqjg0900w5nvkorp5c.gz",
    "https://nihcc.box.com/shared/static/i28rlmbvmfjbl8p2n3ril0pptcmcu9d1.gz",
    "https://nihcc.box.com/shared/static/f1t00wrtdk94satdfb9olcolqx20z2jp.gz",
    "https://nihcc.box.com/shared/static/0aowwzs5lhjrceb3qp67ahp0rd1l1etg.gz",
    "https://nihcc.box.com/shared/static/v5e3goj22zr6h8tzualxfsqlqaygfbsn.gz",
    "https://nihcc.box.com/shared/static/asi7ikud9jwnkrnkj99jnpfkjdes7l6l.gz",
    "https://nihcc.box.com/shared/static/jn1b4mw4n6lnh74ovmcjb8y48h8xj07n.gz",
    "https://nihcc.box.com/shared/static/tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j.gz",
    "https://nihcc.box.com/shared/static/upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj.gz",
    "https://nihcc.box.com/shared/static/l6nilvfa9cg3s28tqv1qc1olm3gnz54p.gz",
    "https://nihcc.box.com/shared/static/hhq8fkdgvcari67vfhs7ppg2w6ni4jze.gz",
    "https://nihcc.box.com/shared/static/ioqwiy20ihqwyr8pf4c24eazhh281pbu.gz",
)
# In the Box folder only: NIH publishes no direct link for these.
METADATA_FILES = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")


@dataclass(frozen=True)
class ReleaseFile:
    name: str
    url: str | None  # the official direct link; None where NIH publishes none


MANIFEST: tuple[ReleaseFile, ...] = (
    tuple(ReleaseFile(f"images_{i:03d}.tar.gz", u) for i, u in enumerate(IMAGE_URLS, 1))
    + tuple(ReleaseFile(n, None) for n in METADATA_FILES))

# name -> MD5 (32 hex digits). NIH publishes no checksums, so this is empty: nothing here comes from NIH. A maintainer
# who has a download they trust may fill it in (e.g. from the "md5" entries of its download.json); a mirror's
# MD5SUMS file takes precedence over it.
CHECKSUMS: dict[str, str] = {}

MD5SUMS = "MD5SUMS"  # the checksum file a mirror may serve, in `md5sum` format
RECORD = "download.json"
PART_SUFFIX = ".part"
LOCK = ".download.lock"
CHUNK = 1 << 20
MAX_BACKOFF_S = 30.0
USER_AGENT = "cxrgan-download/1 (Python urllib)"
OK_STATUSES = ("downloaded", "resumed", "skipped", "verified")
_MD5_LINE = re.compile(r"^([0-9a-fA-F]{32}) [ *](.+)$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")

ByteProgress = Callable[[int, "int | None"], None]  # one transfer's bytes (done, total or None); see _bytes_task


@dataclass
class DownloadConfig:
    """download_nih's options (checked by ``download_release``)."""

    out: str = "data/nih"
    mirror: str | None = None
    only: str | None = None
    retries: int = 20
    timeout: float = 60
    deadline: float = 21600  # seconds per file before giving up (0: none)
    seed: int = 0  # for uniformity with the other tools; downloading involves no randomness


class DownloadError(Exception):
    """One file could not be fetched or verified. ``unreachable``: the host gave no answer at all."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class _Transient(Exception):
    """A failure worth retrying: a connection error, a dropped connection, a 5xx answer."""

    def __init__(self, message: str, unreachable: bool = False, received: int = 0):
        super().__init__(message)
        self.unreachable, self.received = unreachable, received


def _open(req: urllib.request.Request, timeout: float):
    """Every request goes through here (tests replace it to make sure nothing leaves 127.0.0.1)."""
    return urllib.request.urlopen(req, timeout=timeout)


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def names() -> list[str]:
    return [f.name for f in MANIFEST]


def valid_names_text() -> str:
    return f"{MANIFEST[0].name} ... {MANIFEST[len(IMAGE_URLS) - 1].name}, {', '.join(METADATA_FILES)}"


def select(only=None) -> list[ReleaseFile]:
    """The release files named by ``--only`` (comma-separated, or a list), in release order; all when None."""
    if only is None or only == "":
        return list(MANIFEST)
    if isinstance(only, bool):
        raise UserError(f"--only needs file names, comma-separated; valid names: {valid_names_text()}")
    wanted = [str(x) for x in only] if isinstance(only, (list, tuple)) else str(only).split(",")
    wanted = [w.strip() for w in wanted if w.strip()]
    unknown = [w for w in wanted if w not in names()]
    if unknown or not wanted:
        raise UserError(f"--only: unknown file name(s) {', '.join(unknown) or repr(only)}; valid names: "
                        f"{valid_names_text()} (comma-separated)")
    return [f for f in MANIFEST if f.name in wanted]


def check_mirror(mirror: str | None) -> str | None:
    if mirror is None:
        return None
    parsed = urllib.parse.urlparse(str(mirror))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"--mirror must be an http:// or https:// URL of a folder serving the release file names, "
                        f"got {mirror!r}")
    return str(mirror).rstrip("/")


def mirror_url(mirror: str, name: str) -> str:
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(name)}"


def parse_md5sums(text: str, source: str = MD5SUMS) -> dict[str, str]:
    """``md5sum`` output ("<md5>  <name>" or "<md5> *<name>" lines) -> {file name: lowercase md5}."""
    sums = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _MD5_LINE.match(line)
        if not m:
            raise UserError(f"{source} line {i} is not '<md5>  <name>' (md5sum format): {line[:80]!r}")
        sums[PurePosixPath(m.group(2).strip()).name] = m.group(1).lower()
    return sums


def md5_file(path: Path, on_progress: ByteProgress | None = None) -> str:
    h, done, total = hashlib.md5(), 0, path.stat().st_size
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            done += len(block)
            if on_progress:
                on_progress(done, total)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        text = _reason(e.reason) if isinstance(e.reason, BaseException) else str(e.reason)
    elif isinstance(e, TimeoutError):
        text = "no answer within --timeout"
    else:
        text = str(e).strip()
    return text.splitlines()[0] if text.strip() else type(e).__name__


def _request(url: str, offset: int = 0, method: str = "GET") -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers, method=method)


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) -> (START, TOTAL); None for what is absent or unknown."""
    m = _CONTENT_RANGE.match((value or "").strip())
    if not m:
        return None, None
    return _int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


@dataclass
class Fetched:
    size: int
    md5: str
    total: int | None  # what the server announced; None when it did not say
    resumed_from: int  # bytes of an earlier run's NAME.part kept in the file (0: fetched from the start)
    retries: int
    notes: list[str] = field(default_factory=list)


class _Transfer:
    """The state of one file's download across attempts: the part file, its running MD5, the announced total."""

    def __init__(self, url: str, dest: Path, timeout: float, on_progress: ByteProgress | None,
                 give_up_at: float | None = None):
        self.url, self.dest, self.part = url, dest, part_path(dest)
        self.timeout, self.on_progress = timeout, on_progress
        self.give_up_at = give_up_at  # time.monotonic() past which the download is abandoned (the deadline)
        self.total: int | None = None
        self.resumed_from = _size(self.part)
        self.spliced = self.resumed_from > 0  # some bytes came from an earlier request than the last one
        self.notes: list[str] = []
        self._md5, self._hashed = hashlib.md5(), 0

    def restart(self, why: str) -> None:
        self.part.unlink(missing_ok=True)
        self.resumed_from, self.spliced, self.total = 0, False, None
        self._md5, self._hashed = hashlib.md5(), 0
        if why not in self.notes:
            self.notes.append(why)

    def md5(self) -> str:
        self._sync(_size(self.part))
        return self._md5.hexdigest()

    def _sync(self, offset: int) -> None:
        """Make the running MD5 cover exactly the first ``offset`` bytes of the part file."""
        if self._hashed == offset:
            return
        self._md5, self._hashed = hashlib.md5(), 0
        with open(self.part, "rb") as f:
            while self._hashed < offset and (block := f.read(min(CHUNK, offset - self._hashed))):
                self._md5.update(block)
                self._hashed += len(block)

    def attempt(self) -> int:
        """One request; returns the number of bytes received. Raises _Transient (retry) or DownloadError."""
        offset = _size(self.part)
        try:
            resp = _open(_request(self.url, offset), self.timeout)
        except urllib.error.HTTPError as e:
            with contextlib.closing(e):
                if e.code == 416 and offset:
                    _, total = _content_range(e.headers.get("Content-Range"))
                    if total == offset:  # the part file already holds the whole file
                        self.total = total
                        return 0
                    self.restart("the server refused to resume the partial file (HTTP 416); started again from zero")
                    raise _Transient("HTTP 416 Range Not Satisfiable") from None
                if e.code >= 500 or e.code in (408, 429):
                    raise _Transient(f"HTTP {e.code} {e.reason}") from None
                raise DownloadError(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e), unreachable=True) from None
        with resp:
            if "text/html" in (resp.headers.get("Content-Type") or "").lower():
                raise DownloadError("the server answered with a web page instead of the file (the link may have "
                                    f"expired or need a browser; see {BOX_FOLDER})")
            if resp.status == 206:
                start, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self.restart("the server sent a different range than asked for; started again from zero")
                    raise _Transient(f"asked for bytes from {offset:,}, the server sent bytes from {start}")
            else:
                total = _int(resp.headers.get("Content-Length"))
                if offset:
                    self.restart("the server ignored the Range request (answered 200); started again from zero")
                    offset = 0
            if self.total is not None and total is not None and total != self.total:
                self.restart(f"the file's size changed on the server ({self.total:,} -> {total:,} bytes); started "
                             "again from zero")
                raise _Transient("the file's size changed on the server")
            self.total = total if total is not None else self.total
            if offset:
                self.spliced = True
            return self._stream(resp, offset)

    def _stream(self, resp, offset: int) -> int:
        self._sync(offset)
        done, received = offset, 0
        if self.on_progress:
            self.on_progress(done, self.total)
        with open(self.part, "ab" if offset else "wb") as f:
            while True:
                if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                    raise DownloadError(f"gave up at the deadline after {done:,} of {self._total_text()} bytes (a "
                                        "server this slow would take too long; resume later, or raise --deadline)")
                try:  # read1: whatever has arrived, so a trickling server still meets the deadline check
                    chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"the connection dropped after {done:,} of {self._total_text()} bytes "
                                     f"({_reason(e)})", received=received) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:
                    raise UserError(f"cannot write {self.part}: {e.strerror or e}") from None
                self._md5.update(chunk)
                self._hashed += len(chunk)
                done += len(chunk)
                received += len(chunk)
                if self.on_progress:
                    self.on_progress(done, self.total)
        if self.total is not None and done < self.total:
            raise _Transient(f"the connection closed after {done:,} of {self.total:,} bytes", received=received)
        return received

    def _total_text(self) -> str:
        return f"{self.total:,}" if self.total is not None else "?"


def fetch(url: str, dest: str | Path, md5: str | None = None, retries: int = 5, timeout: float = 60.0,
          backoff: float = 1.0, on_progress: ByteProgress | None = None, md5_source: str = "expected",
          deadline: float = 0) -> Fetched:
    """Download ``url`` to ``dest`` through ``dest``.part (resuming one that exists) and rename it when verified.

    Retries transient failures at most ``retries`` times in all (not in a row: a server that keeps cutting the body
    and ignores Range would otherwise be asked forever), sleeping ``backoff`` * 2**k seconds (at most 30) in
    between, and gives up once ``deadline`` seconds (0: no limit) have passed. Verifies the size the server
    announced, the content (a complete gzip stream holding a tar archive; a csv's header; a list of image names)
    and, when ``md5`` is given, the MD5 (``md5_source`` names where it came from, for the message). Raises
    DownloadError when the file cannot be fetched or verified; NAME.part is kept when it is merely incomplete,
    deleted when it is wrong.
    """
    dest = Path(dest)
    t0 = time.monotonic()
    t = _Transfer(url, dest, timeout, on_progress, t0 + deadline if deadline else None)
    total_retries, refetched = 0, False
    while True:
        try:
            t.attempt()
        except _Transient as e:
            total_retries += 1
            if total_retries > retries:
                raise DownloadError(f"{e} (after {_plural(retries, 'retry')})", unreachable=e.unreachable) from None
            wait = min(backoff * 2 ** (total_retries - 1), MAX_BACKOFF_S)
            if deadline and time.monotonic() - t0 + wait > deadline:
                raise DownloadError(f"{e} (gave up at the {deadline:g} s deadline, after "
                                    f"{_plural(total_retries - 1, 'retry')})", unreachable=e.unreachable) from None
            time.sleep(wait)
            continue
        size = _size(t.part)
        if t.total is not None and size > t.total:
            t.restart("")
            raise DownloadError(f"received {size:,} bytes, more than the {t.total:,} the server announced; the "
                                "partial file was deleted")
        digest = t.md5()
        problem = None
        if md5 and digest != md5.lower():
            problem = f"MD5 mismatch: received {digest}, expected {md5.lower()} ({md5_source})"
        elif not md5:  # an MD5 that matched says more than any look at the content
            problem = content_problem(dest.name, t.part, size_known=t.total is not None)
        if problem:
            if t.spliced and not refetched and total_retries < retries:
                # bytes from two requests (or two runs) were joined; the file may have changed in between
                refetched, total_retries = True, total_retries + 1
                t.restart(f"{problem} after resuming; downloaded again from zero")
                continue
            t.restart("")
            raise DownloadError(f"{problem}; the download was deleted")
        os.replace(t.part, dest)
        if t.total is None:
            t.notes.append("the server announced no size; size not checked")
        return Fetched(size=size, md5=digest, total=t.total, resumed_from=t.resumed_from, retries=total_retries,
                       notes=[n for n in t.notes if n])


def content_problem(name: str, path: Path, size_known: bool = True) -> str | None:
    """Why a received file cannot be the release file ``name`` (None when it can). Catches what a size check cannot:
    a sign-in or error page served under any content type, and, when the server announced no size, a body cut
    short (an archive's gzip stream without its end; a text file ending mid-line)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if name.endswith((".tar.gz", ".gz", ".tgz")):
        if head[:2] != b"\x1f\x8b":
            return "the received file is not a gzip archive" + (" (it is a web page)" if _looks_like_html(head) else "")
        return _gzip_tar_problem(path, whole=not size_known)
    if not head:
        return "the received file is empty"
    if _looks_like_html(head):
        return "the received file is a web page, not the file (the link may need a browser; see " + BOX_FOLDER + ")"
    text = head.decode("utf-8", "replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    if name.endswith(".csv") and not ("Image Index" in first and "Finding Labels" in first):
        return "the received csv lacks the NIH header (Image Index, Finding Labels, ...)"
    if name.endswith(".txt") and not re.fullmatch(r"\d{8}_\d{3}\.png\s*", first):
        return "the received list does not start with an image name such as 00000001_000.png"
    if not size_known and name.endswith((".csv", ".txt")) and not _ends_with_newline(path):
        return "the received file ends in the middle of a line (cut short; the server announced no size)"
    return None


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _gzip_tar_problem(path: Path, whole: bool) -> str | None:
    """The archive must start as a tar file; with ``whole``, its gzip stream is decompressed to the end, since a
    stream cut short lacks its trailer (CRC and length): the only sign of truncation when no size was announced.
    Concatenated gzip members and zero padding after the last one are accepted, as gzip and tarfile accept them."""
    d, first = zlib.decompressobj(zlib.MAX_WBITS | 16), b""
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 16):  # small blocks: bounded output even for a highly compressible stream
                while block:
                    out = d.decompress(block, 1 << 20)
                    if len(first) < 512:
                        first += out[:512 - len(first)]
                    block = d.unconsumed_tail
                    if d.eof:
                        rest = d.unused_data + block
                        if not rest.strip(b"\x00"):  # end of the last member, or padding
                            block = b""
                        else:  # another member follows
                            d, block = zlib.decompressobj(zlib.MAX_WBITS | 16), rest
                if not whole and len(first) >= 512:
                    break
    except zlib.error as e:
        return f"the received archive is damaged ({e})"
    if whole and not d.eof:
        return "the received archive is cut short (its gzip stream has no end)"
    if len(first) == 512 and first[257:262] != b"ustar":
        return "the received archive does not hold a tar file"
    return None


def remote_size(url: str, timeout: float) -> int | None:
    """The size a HEAD request announces; None when the server cannot be asked or does not say."""
    try:
        with _open(_request(url, method="HEAD"), timeout) as resp:
            return _int(resp.headers.get("Content-Length"))
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None


def mirror_checksums(mirror: str, retries: int, timeout: float, backoff: float) -> dict[str, str] | None:
    """The mirror's MD5SUMS as {name: md5}; None when it serves none (HTTP 404/403/410)."""
    url = mirror_url(mirror, MD5SUMS)
    for failure in range(retries + 1):
        try:
            with _open(_request(url), timeout) as resp:
                text = resp.read(16 << 20).decode("utf-8", "replace")
            return parse_md5sums(text, source=url)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (403, 404, 410):
                return None
            if e.code < 500:
                raise UserError(f"--mirror {mirror}: {MD5SUMS} answered HTTP {e.code} {e.reason}") from None
            reason = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = _reason(e)
        if failure < retries:
            time.sleep(min(backoff * 2 ** failure, MAX_BACKOFF_S))
    raise UserError(f"cannot reach --mirror {mirror} ({reason} for {url}, after {_plural(retries, 'retry')})")


@dataclass
class FileResult:
    name: str
    url: str | None
    status: str  # downloaded, resumed, skipped, verified; or failed, missing, not attempted
    size: int | None = None
    md5: str | None = None  # of the file as received/present; None when not computed
    checked: str = ""  # how it was checked
    note: str = ""
    error: str = ""
    unreachable: bool = field(default=False, repr=False)  # failed because the host gave no answer

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass
class Outcome:
    out: Path
    mirror: str | None
    checksum_source: str
    files: list[FileResult]

    def error_message(self) -> str | None:
        """One line naming every problem and what to do; None when every selected file is in place."""
        parts = []
        for r in self.files:
            if r.status == "failed" and r.url is None:
                parts.append(f"{r.name}: {r.error}")
            elif r.status == "failed":
                resume = (f"; re-running resumes from {r.name}{PART_SUFFIX}"
                          if part_path(self.out / r.name).exists() else "; re-running downloads it again")
                parts.append(f"{r.name} could not be downloaded from {r.url}: {r.error}{resume}")
        skipped = [r.name for r in self.files if r.status == "not attempted"]
        if skipped:
            parts.append(f"stopped after the host could not be reached; not attempted: {', '.join(skipped)} "
                         "(re-run when the connection is back)")
        missing = [r.name for r in self.files if r.status == "missing"]
        if missing:
            it = "it" if len(missing) == 1 else "them"
            parts.append(f"{', '.join(missing)} cannot be downloaded automatically (NIH publishes no direct link "
                         f"for {it}): download {it} from the Box folder {BOX_FOLDER} into {self.out}/ and re-run, "
                         "or use --mirror URL")
        return "; ".join(parts) or None


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One downloader per output folder: two appending to the same NAME.part would corrupt it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"another download is writing to {out}/ (it holds {out / LOCK}); wait for it to "
                            "finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_number(value, flag: str, integer: bool, positive: bool):
    if (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
            or value < 0 or (positive and value == 0)):
        raise UserError(f"{flag} must be {'a whole number' if integer else 'a number'} "
                        f"{'> 0' if positive else '>= 0'}, got {value!r}")


def download_release(out: str | Path = "data/nih", mirror: str | None = None, only=None, retries: int = 20,
                     timeout: float = 60.0, backoff: float = 1.0, progress: ProgressFn = no_progress,
                     deadline: float = 21600) -> Outcome:
    """Fetch the selected release files into ``out``; a file that fails does not stop the others (except when the
    host cannot be reached at all). Raises UserError for bad arguments, an unreachable mirror, a write failure.
    """
    _check_number(retries, "--retries", integer=True, positive=False)
    _check_number(timeout, "--timeout", integer=False, positive=True)
    _check_number(backoff, "backoff", integer=False, positive=False)
    _check_number(deadline, "--deadline", integer=False, positive=False)
    mirror = check_mirror(mirror)
    files = select(only)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {out}: {e.strerror or e}") from None
    with _locked(out):
        sums = {n: (m.lower(), "built-in") for n, m in CHECKSUMS.items()}
        source = "built-in table" if CHECKSUMS else "none (NIH publishes no checksums)"
        if mirror:
            served = mirror_checksums(mirror, retries, timeout, backoff)
            if served is not None:
                sums.update({n: (m, "mirror MD5SUMS") for n, m in served.items()})
                source = f"{mirror_url(mirror, MD5SUMS)} (over the built-in table)" if CHECKSUMS else \
                    mirror_url(mirror, MD5SUMS)
        results, stopped = [], False
        for f in files:
            url = mirror_url(mirror, f.name) if mirror else f.url
            md5, md5_from = sums.get(f.name, (None, None))
            results.append(_one(f.name, url, out / f.name, md5, md5_from, stopped, retries, timeout, backoff,
                                _bytes_task(progress, f.name), deadline))
            stopped = stopped or results[-1].unreachable
    return Outcome(out=out, mirror=mirror, checksum_source=source, files=results)


def _bytes_task(progress: ProgressFn, name: str) -> ByteProgress:
    """One file's (done, total) byte reports as a progress task, started at the first report (a resumed file
    starts at its partial size, which keeps the rate honest)."""
    task = None

    def update(done: int, total: int | None) -> None:
        nonlocal task
        if task is None:
            task = progress(name, total, done)
        task(0, completed=done, total=total)

    return update


def _one(name, url, dest: Path, md5, md5_from, stopped, retries, timeout, backoff, progress,
         deadline: float = 0) -> FileResult:
    replaced = ""
    if dest.is_file():
        size = dest.stat().st_size
        if md5:
            digest = md5_file(dest, progress)
            if digest == md5:
                return FileResult(name, url, "verified", size, digest, f"MD5 ({md5_from})", "already present")
            if url is None:
                return FileResult(name, None, "failed", size, digest, error=(
                    f"the present file's MD5 {digest} does not match {md5} ({md5_from} checksum); replace it with a "
                    f"good copy from the Box folder {BOX_FOLDER}"))
            replaced = f"the present file's MD5 {digest} did not match; replaced"
        elif url is None:
            return FileResult(name, url, "skipped", size, None, "not checked (no checksum known, no direct link)",
                              "already present")
        else:
            announced = remote_size(url, timeout)
            if announced is None:
                return FileResult(name, url, "skipped", size, None, "not checked (the server did not give a size)",
                                  "already present")
            if announced == size:
                return FileResult(name, url, "skipped", size, None, "size (no checksum known)", "already present")
            replaced = f"the present file has {size:,} bytes, the server {announced:,}; replaced"
    if url is None:
        return FileResult(name, None, "missing", error="no direct link")
    if stopped:
        return FileResult(name, url, "not attempted")
    try:
        got = fetch(url, dest, md5, retries, timeout, backoff, progress, md5_source=f"{md5_from} checksum",
                    deadline=deadline)
    except DownloadError as e:
        return FileResult(name, url, "failed", error=str(e), unreachable=e.unreachable)
    checked = " + ".join([*(["size"] if got.total is not None else []), *([f"MD5 ({md5_from})"] if md5 else [])])
    notes = [*([replaced] if replaced else []), *got.notes,
             *([f"{_plural(got.retries, 'retry')}"] if got.retries else [])]
    return FileResult(name, url, "resumed" if got.resumed_from else "downloaded", got.size, got.md5,
                      checked or "not checked", "; ".join(notes))


def _mtime(path: Path) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat()
    except OSError:
        return None


def write_record(outcome: Outcome, call_args: dict) -> Path:
    """OUT/download.json: what is in the folder, from where, how checked. Entries of files this run did not touch
    are kept from the previous record; a skipped file (same size and mtime) keeps the MD5 computed when it was
    downloaded."""
    path = outcome.out / RECORD
    try:
        previous = json.loads(path.read_text()).get("files", {})
        previous = previous if isinstance(previous, dict) else {}
    except (OSError, ValueError, AttributeError):
        previous = {}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    files = dict(previous)
    for r in outcome.files:
        entry = {"status": r.status, "size": r.size, "md5": r.md5, "checked": r.checked, "url": r.url,
                 "downloaded": now if r.status in ("downloaded", "resumed") else None,
                 "mtime": _mtime(outcome.out / r.name) if r.ok else None}
        before = previous.get(r.name)
        if (r.status in ("skipped", "verified") and isinstance(before, dict)
                and (before.get("size"), before.get("mtime")) == (r.size, entry["mtime"])):
            # present from an earlier run: keep when and from where it came, and the MD5 computed then
            entry["md5"] = entry["md5"] or before.get("md5")
            entry["downloaded"], entry["url"] = before.get("downloaded"), before.get("url") or r.url
        if r.note:
            entry["note"] = r.note
        if r.error:
            entry["error"] = r.error
        files[r.name] = entry
    order = {n: i for i, n in enumerate(names())}
    files = dict(sorted(files.items(), key=lambda kv: order.get(kv[0], len(order))))
    record = {
        "format": "cxrgan-download/1",
        "created": now,
        "release": "NIH ChestX-ray14",
        "source": outcome.mirror or f"official NIH links (Box folder {BOX_FOLDER})",
        "checksums": outcome.checksum_source,
        "note": ("NIH publishes no checksums: files were checked by the size the server announced unless an MD5 is "
                 "known; the md5 entries are of the files as received, not confirmed against NIH"),
        "complete": all(isinstance(files.get(n), dict) and files[n].get("status") in OK_STATUSES for n in names()),
        "arguments": call_args,
        "files": files,
    }
    write_json_atomic(path, record)
    return path
