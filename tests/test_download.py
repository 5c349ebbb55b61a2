"""download_nih against a local HTTP server on 127.0.0.1 that serves a fake release and misbehaves on request:
dropped connections, ignored Range, 5xx answers, short bodies, wrong MD5SUMS. Nothing here touches the internet."""

import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cxrgan.data import download
from cxrgan.data.download import MANIFEST, METADATA_FILES, download_release, fetch, parse_md5sums, write_record
from cxrgan.errors import UserError
from conftest import add_member, nih_rows, run_tool, write_archives

ARCHIVES = [f.name for f in MANIFEST if f.url]
BUILT_IN_CHECKSUMS = dict(download.CHECKSUMS)  # as shipped (the tests below replace it)
FAST = dict(retries=3, timeout=5, backoff=0)
STALL_S = 0.4


class FakeRelease:
    """What the server serves and how it misbehaves; every request is logged."""

    def __init__(self, files: dict):
        self.files = dict(files)
        self.log = []  # dicts: method, name, range, status, sent (body bytes)
        self.drop_after = {}  # name -> n: send n body bytes, then close the connection (once)
        self.short = {}  # name -> k: always send k bytes fewer than Content-Length announces
        self.fail = {}  # name -> how many more requests answer HTTP 500
        self.stall = {}  # name -> how many more requests wait STALL_S before answering
        self.always_drop = {}  # name -> n: every answer sends n body bytes, then closes the connection
        self.no_length = set()  # names answered without Content-Length
        self.content_type = {}  # name -> the Content-Type to answer with (default application/octet-stream)
        self.ignore_range = False
        self.lock = threading.Lock()
        self.url = ""

    def gets(self, name):
        return [e for e in self.log if e["name"] == name and e["method"] == "GET"]

    def md5sums(self, **wrong):
        """Serve an MD5SUMS of every file (in md5sum format); ``wrong`` names get a wrong checksum."""
        lines = [f"{'0' * 32 if n in wrong else hashlib.md5(d).hexdigest()}  {n}" for n, d in self.files.items()]
        self.files["MD5SUMS"] = ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        fake: FakeRelease = self.server.fake
        name = urllib.parse.unquote(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        entry = {"method": self.command, "name": name, "range": rng, "status": None, "sent": 0}
        fake.log.append(entry)
        if name.startswith("r/"):  # like the Box static links: a redirect to the file
            entry["status"] = 302
            self.send_response(302)
            self.send_header("Location", "/" + name[2:])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with fake.lock:
            stall = fake.stall.get(name, 0) > 0
            fake.stall[name] = fake.stall.get(name, 0) - stall
        if stall:
            time.sleep(STALL_S)
        with fake.lock:
            if fake.fail.get(name, 0) > 0:
                fake.fail[name] -= 1
                entry["status"] = 500
                self.send_error(500)
                return
        if name not in fake.files:
            entry["status"] = 404
            self.send_error(404)
            return
        data = fake.files[name]
        start, status = 0, 200
        if rng and not fake.ignore_range:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)), 206
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", fake.content_type.get(name, "application/octet-stream"))
        if name not in fake.no_length:
            self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        n = len(body)
        with fake.lock:
            if name in fake.drop_after:
                n = min(n, fake.drop_after.pop(name))
            if name in fake.short:
                n = max(0, n - fake.short[name])
            if name in fake.always_drop:
                n = min(n, fake.always_drop[name])
        entry["sent"] = n  # before writing: a client that has every byte may look at the log at once
        self.wfile.write(body[:n])
        self.close_connection = True


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """name -> bytes of a tiny fake release: 3 real NIH-style archives, 9 tar.gz files of random bytes, csv, lists."""
    rows = nih_rows(12)
    root = write_archives(tmp_path_factory.mktemp("release"), rows, per_archive=10)
    files = {p.name: p.read_bytes() for p in sorted(root.iterdir())}
    rng = np.random.default_rng(0)
    for name in ARCHIVES:
        files.setdefault(name, _tar_gz(rng.bytes(int(rng.integers(20_000, 60_000)))))
    names = [r["name"] for r in rows]
    files["train_val_list.txt"] = ("\n".join(names[:-5]) + "\n").encode()
    files["test_list.txt"] = ("\n".join(names[-5:]) + "\n").encode()
    assert sorted(files) == sorted(download.names())
    return files


def _tar_gz(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, "images/noise.bin", payload)
    return gzip.compress(buf.getvalue(), mtime=0)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # e.g. a broken pipe after the client gave up on a stalled answer


@pytest.fixture
def server(release):
    fake = FakeRelease(release)
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.fake = fake
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Every request must go to 127.0.0.1, directly (no proxy from the environment)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    real_open = download._open

    def guarded(req, timeout):
        assert urllib.parse.urlparse(req.full_url).hostname == "127.0.0.1", req.full_url
        return real_open(req, timeout)

    monkeypatch.setattr(download, "_open", guarded)
    monkeypatch.setattr(download, "CHECKSUMS", {})


def by_name(outcome):
    return {r.name: r for r in outcome.files}


def assert_in_place(out, release, names):
    for n in names:
        assert (out / n).read_bytes() == release[n], n
    assert not list(out.glob("*.part"))


# ---------------------------------------------------------------- the manifest


def test_manifest_lists_the_release_with_the_official_links():
    assert [f.name for f in MANIFEST] == [f"images_{i:03d}.tar.gz" for i in range(1, 13)] + list(METADATA_FILES)
    urls = [f.url for f in MANIFEST if f.url]
    assert len(urls) == len(set(urls)) == 12
    assert all(re.fullmatch(r"https://nihcc\.box\.com/shared/static/[0-9a-z]{32}\.gz", u) for u in urls)
    assert urls[0].endswith("/vfk49d74nhbxq3nqjg0900w5nvkorp5c.gz")  # images_001
    assert urls[-1].endswith("/ioqwiy20ihqwyr8pf4c24eazhh281pbu.gz")  # images_012
    assert all(f.url is None for f in MANIFEST if f.name in METADATA_FILES)  # NIH publishes no direct link
    # the built-in table (empty: NIH publishes none) only ever holds well-formed MD5s of release files
    table = BUILT_IN_CHECKSUMS
    assert set(table) <= set(download.names()) and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in table.values())


def test_parse_md5sums_reads_md5sum_format():
    text = f"# comment\n{'a' * 32}  images_001.tar.gz\n{'B' * 32} *./test_list.txt\n\n"
    assert parse_md5sums(text) == {"images_001.tar.gz": "a" * 32, "test_list.txt": "b" * 32}
    with pytest.raises(UserError, match="line 1 is not"):
        parse_md5sums("not a checksum line\n")


def test_only_selects_a_subset_and_refuses_unknown_names(server, tmp_path):
    want = ["images_002.tar.gz", "Data_Entry_2017_v2020.csv"]
    outcome = download_release(tmp_path, mirror=server.url, only=",".join(reversed(want)), **FAST)
    assert [r.name for r in outcome.files] == want and outcome.error_message() is None
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(want)
    assert download.select(("test_list.txt", "images_001.tar.gz"))[0].name == "images_001.tar.gz"  # fire's tuple
    with pytest.raises(UserError, match=r"--only: unknown file name\(s\) images_13.tar.gz; valid names: "
                                        r"images_001.tar.gz \.\.\. images_012.tar.gz, Data_Entry"):
        download_release(tmp_path, mirror=server.url, only="images_001.tar.gz,images_13.tar.gz", **FAST)


# ---------------------------------------------------------------- whole runs


def test_mirror_download_of_everything_then_a_rerun_skips(server, release, tmp_path):
    outcome = download_release(tmp_path, mirror=server.url, **FAST)
    assert outcome.error_message() is None
    assert {r.status for r in outcome.files} == {"downloaded"}
    assert_in_place(tmp_path, release, release)
    assert all(r.md5 == hashlib.md5(release[r.name]).hexdigest() and r.checked == "size" for r in outcome.files)
    with tarfile.open(tmp_path / "images_001.tar.gz") as tar:
        assert all(m.name.startswith("images/") for m in tar.getmembers())
    write_record(outcome, {"out": str(tmp_path)})

    server.log.clear()
    again = download_release(tmp_path, mirror=server.url, **FAST)
    assert {r.status for r in again.files} == {"skipped"} and again.error_message() is None
    assert all(e["method"] == "HEAD" or e["name"] == "MD5SUMS" for e in server.log)  # sizes asked, nothing fetched
    record = json.loads(write_record(again, {}).read_text())
    assert record["complete"] and record["files"]["images_003.tar.gz"]["md5"] == \
        hashlib.md5(release["images_003.tar.gz"]).hexdigest()  # the MD5 computed when it was downloaded is kept


def test_present_files_are_verified_by_md5sums_or_replaced(server, release, tmp_path):
    server.md5sums()
    (tmp_path / "images_001.tar.gz").write_bytes(release["images_001.tar.gz"])
    (tmp_path / "images_002.tar.gz").write_bytes(release["images_002.tar.gz"][:-3] + b"xyz")  # same size, wrong
    (tmp_path / "test_list.txt").write_bytes(b"short")
    outcome = by_name(download_release(tmp_path, mirror=server.url, **FAST))
    assert outcome["images_001.tar.gz"].status == "verified" and not server.gets("images_001.tar.gz")
    assert outcome["images_002.tar.gz"].status == "downloaded" and "did not match; replaced" in \
        outcome["images_002.tar.gz"].note
    assert outcome["test_list.txt"].status == "downloaded"
    assert_in_place(tmp_path, release, release)
    assert all("MD5 (mirror MD5SUMS)" in r.checked for r in outcome.values())


def test_present_file_of_the_wrong_size_is_downloaded_again(server, release, tmp_path):
    (tmp_path / "images_004.tar.gz").write_bytes(b"\x1f\x8b truncated")
    r = by_name(download_release(tmp_path, mirror=server.url, only="images_004.tar.gz", **FAST))["images_004.tar.gz"]
    assert r.status == "downloaded" and "replaced" in r.note
    assert_in_place(tmp_path, release, ["images_004.tar.gz"])


# ---------------------------------------------------------------- resuming


def test_dropped_connection_resumes_from_the_bytes_written(server, release, tmp_path):
    name = "images_005.tar.gz"
    server.drop_after[name] = 7000
    seen = []
    got = fetch(f"{server.url}/{name}", tmp_path / name, retries=2, backoff=0, timeout=5,
                on_progress=lambda done, total: seen.append((done, total)))
    requests = server.gets(name)
    assert [e["range"] for e in requests] == [None, "bytes=7000-"]  # resumed, not restarted
    assert [e["status"] for e in requests] == [200, 206]
    assert sum(e["sent"] for e in requests) == len(release[name])  # every byte served exactly once
    assert (tmp_path / name).read_bytes() == release[name] and got.md5 == hashlib.md5(release[name]).hexdigest()
    assert got.retries == 1 and got.resumed_from == 0  # resumed within this run: still "downloaded"
    assert seen[-1] == (len(release[name]),) * 2 and (7000, len(release[name])) in seen


def test_part_file_of_an_earlier_run_is_resumed(server, release, tmp_path):
    name = "images_006.tar.gz"
    (tmp_path / f"{name}.part").write_bytes(release[name][:5000])
    r = by_name(download_release(tmp_path, mirror=server.url, only=name, **FAST))[name]
    assert r.status == "resumed" and r.md5 == hashlib.md5(release[name]).hexdigest()
    assert [(e["range"], e["sent"]) for e in server.gets(name)] == [("bytes=5000-", len(release[name]) - 5000)]
    assert_in_place(tmp_path, release, [name])


def test_server_ignoring_range_restarts_from_zero(server, release, tmp_path):
    name = "images_007.tar.gz"
    (tmp_path / f"{name}.part").write_bytes(b"garbage that must not stay in front")
    server.ignore_range = True
    r = by_name(download_release(tmp_path, mirror=server.url, only=name, **FAST))[name]
    assert r.status == "downloaded" and "ignored the Range request" in r.note
    assert server.gets(name)[0]["status"] == 200
    assert_in_place(tmp_path, release, [name])


def test_complete_part_file_answered_416_is_just_renamed(server, release, tmp_path):
    name, longer = "images_008.tar.gz", "images_009.tar.gz"
    (tmp_path / f"{name}.part").write_bytes(release[name])
    (tmp_path / f"{longer}.part").write_bytes(release[longer] + b"extra")  # longer than the file: start again
    outcome = by_name(download_release(tmp_path, mirror=server.url, only=f"{name},{longer}", **FAST))
    assert outcome[name].status == "resumed" and [e["status"] for e in server.gets(name)] == [416]
    assert outcome[longer].status == "downloaded" and [e["status"] for e in server.gets(longer)] == [416, 200]
    assert_in_place(tmp_path, release, [name, longer])


def test_resume_through_a_redirect_keeps_the_range(server, release, tmp_path):
    name = "images_010.tar.gz"
    (tmp_path / f"{name}.part").write_bytes(release[name][:100])
    fetch(f"{server.url}/r/{name}", tmp_path / name, **FAST)
    assert [(e["name"], e["range"]) for e in server.log] == [(f"r/{name}", "bytes=100-"), (name, "bytes=100-")]
    assert_in_place(tmp_path, release, [name])


# ---------------------------------------------------------------- failures


def test_server_errors_are_retried_then_reported(server, release, tmp_path):
    name = "images_011.tar.gz"
    server.fail[name] = 2
    fetch(f"{server.url}/{name}", tmp_path / name, **FAST)
    assert [e["status"] for e in server.gets(name)] == [500, 500, 200]
    assert_in_place(tmp_path, release, [name])

    (tmp_path / name).unlink()
    server.fail[name] = 5
    outcome = download_release(tmp_path, mirror=server.url, only=name, retries=2, timeout=5, backoff=0)
    r = outcome.files[0]
    assert r.status == "failed" and r.error == "HTTP 500 Internal Server Error (after 2 retries)"
    msg = outcome.error_message()
    assert msg.startswith(f"{name} could not be downloaded from {server.url}/{name}: HTTP 500") and "\n" not in msg
    assert not (tmp_path / name).exists()


def test_a_server_that_does_not_answer_in_time_is_retried(server, release, tmp_path):
    name = "images_011.tar.gz"
    server.stall[name] = 1
    got = fetch(f"{server.url}/{name}", tmp_path / name, retries=1, timeout=STALL_S / 4, backoff=0)
    assert got.retries == 1 and len(server.gets(name)) == 2
    assert_in_place(tmp_path, release, [name])

    server.stall[name] = 2
    with pytest.raises(download.DownloadError, match=r"^no answer within --timeout \(after 1 retry\)$"):
        fetch(f"{server.url}/{name}", tmp_path / "again.tar.gz", retries=1, timeout=STALL_S / 4, backoff=0)


def test_file_shorter_than_announced_fails_keeps_the_part_and_resumes_later(server, release, tmp_path):
    name = "images_012.tar.gz"
    server.short[name] = 10
    outcome = download_release(tmp_path, mirror=server.url, only=name, **FAST)
    r = outcome.files[0]
    size = len(release[name])
    assert r.status == "failed"
    assert r.error == f"the connection closed after {size - 10:,} of {size:,} bytes (after 3 retries)"
    assert not (tmp_path / name).exists() and (tmp_path / f"{name}.part").stat().st_size == size - 10
    assert f"re-running resumes from {name}.part" in outcome.error_message()
    assert len(server.gets(name)) == 1 + 3  # 3 retries, none of which received a byte

    server.short.clear()
    r = download_release(tmp_path, mirror=server.url, only=name, **FAST).files[0]
    assert r.status == "resumed" and server.gets(name)[-1]["range"] == f"bytes={size - 10}-"
    assert_in_place(tmp_path, release, [name])


def test_wrong_md5sums_entry_fails_verification_and_deletes_the_download(server, release, tmp_path):
    server.md5sums(**{"images_001.tar.gz": True})
    outcome = download_release(tmp_path, mirror=server.url, only="images_001.tar.gz,images_002.tar.gz", **FAST)
    bad, good = outcome.files
    assert bad.status == "failed" and good.status == "downloaded"  # one failure does not stop the others
    assert bad.error == (f"MD5 mismatch: received {hashlib.md5(release[bad.name]).hexdigest()}, expected {'0' * 32} "
                         "(mirror MD5SUMS checksum); the download was deleted")
    assert not (tmp_path / bad.name).exists() and not (tmp_path / f"{bad.name}.part").exists()
    assert outcome.error_message().endswith("the download was deleted; re-running downloads it again")


def test_mismatch_after_resuming_downloads_again_from_zero(server, release, tmp_path):
    name = "images_003.tar.gz"
    server.md5sums()
    (tmp_path / f"{name}.part").write_bytes(b"\x1f\x8b" + bytes(98))  # bytes of some other file in front
    r = download_release(tmp_path, mirror=server.url, only=name, **FAST).files[0]
    assert r.status == "downloaded" and "downloaded again from zero" in r.note
    assert [e["range"] for e in server.gets(name)] == ["bytes=100-", None]
    assert_in_place(tmp_path, release, [name])


def test_mirror_md5sums_take_precedence_over_the_built_in_table(server, release, tmp_path, monkeypatch):
    a, b = "images_001.tar.gz", "images_002.tar.gz"
    monkeypatch.setattr(download, "CHECKSUMS", {a: "1" * 32, b: hashlib.md5(release[b]).hexdigest()})
    server.md5sums(**{b: True})  # the mirror is right about a, wrong about b
    outcome = by_name(download_release(tmp_path, mirror=server.url, only=f"{a},{b}", **FAST))
    assert outcome[a].status == "downloaded" and outcome[a].checked == "size + MD5 (mirror MD5SUMS)"
    assert outcome[b].status == "failed" and "mirror MD5SUMS" in outcome[b].error

    del server.files["MD5SUMS"]  # no MD5SUMS on the mirror (404): the built-in table applies
    outcome = by_name(download_release(tmp_path, mirror=server.url, only=f"{a},{b}", **FAST))
    assert outcome[a].status == "failed" and "expected 1111" in outcome[a].error and "built-in" in outcome[a].error
    assert outcome[b].status == "downloaded" and outcome[b].checked == "size + MD5 (built-in)"


def test_without_a_mirror_the_csv_and_lists_must_be_put_in_place_by_hand(server, release, tmp_path, monkeypatch):
    manifest = tuple(download.ReleaseFile(f.name, f"{server.url}/r/{f.name}" if f.url else None) for f in MANIFEST)
    monkeypatch.setattr(download, "MANIFEST", manifest)
    out = tmp_path / "nih"
    outcome = download_release(out, **FAST)
    statuses = {r.name: r.status for r in outcome.files}
    assert statuses == {**{n: "downloaded" for n in ARCHIVES}, **{n: "missing" for n in METADATA_FILES}}
    assert_in_place(out, release, ARCHIVES)  # everything else was downloaded first
    assert outcome.error_message() == (
        "Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt cannot be downloaded automatically (NIH "
        "publishes no direct link for them): download them from the Box folder "
        f"https://nihcc.app.box.com/v/ChestXray-NIHCC into {out}/ and re-run, or use --mirror URL")

    for n in METADATA_FILES:
        (out / n).write_bytes(release[n])
    outcome = download_release(out, **FAST)
    assert outcome.error_message() is None and all(r.status == "skipped" for r in outcome.files)
    assert all(r.checked.startswith("not checked") for r in outcome.files if r.name in METADATA_FILES)

    # with a known checksum, a hand-placed csv is verified; a wrong one is reported, not replaced
    csv, lst = METADATA_FILES[:2]
    monkeypatch.setattr(download, "CHECKSUMS", {csv: hashlib.md5(release[csv]).hexdigest(), lst: "2" * 32})
    outcome = by_name(download_release(out, only=f"{csv},{lst}", **FAST))
    assert outcome[csv].status == "verified" and outcome[csv].checked == "MD5 (built-in)"
    assert outcome[lst].status == "failed" and (out / lst).read_bytes() == release[lst]
    assert download_release(out, only=lst, **FAST).error_message().startswith(
        f"{lst}: the present file's MD5 {hashlib.md5(release[lst]).hexdigest()} does not match {'2' * 32} (built-in "
        "checksum); replace it with a good copy from the Box folder https://nihcc.app.box.com/v/ChestXray-NIHCC")


def test_unreachable_host_stops_the_run(server, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    manifest = tuple(download.ReleaseFile(f.name, f"{dead if f.name == ARCHIVES[0] else server.url}/{f.name}")
                     for f in MANIFEST if f.url)
    monkeypatch.setattr(download, "MANIFEST", manifest)
    outcome = download_release(tmp_path, retries=1, timeout=5, backoff=0)
    assert [r.status for r in outcome.files] == ["failed"] + ["not attempted"] * 11
    assert "Connection refused" in outcome.files[0].error and "not attempted: images_002.tar.gz" in \
        outcome.error_message()
    with pytest.raises(UserError, match=rf"cannot reach --mirror {dead} \(.*Connection refused"):
        download_release(tmp_path, mirror=dead, retries=0, timeout=5, backoff=0)


def test_one_download_per_folder(server, tmp_path):
    import fcntl

    with open(tmp_path / download.LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another download is writing to"):
            download_release(tmp_path, mirror=server.url, **FAST)


# ---------------------------------------------------------------- the command line


def test_cli_end_to_end(server, release, tmp_path):
    out = tmp_path / "nih"
    r = run_tool("download_nih.py", "--out", out, "--mirror", server.url, "--retries", "1", "--timeout", "5",
                 "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert_in_place(out, release, release)
    record = json.loads((out / "download.json").read_text())
    assert record["complete"] and record["source"] == server.url and record["arguments"]["seed"] == 3
    assert record["arguments"]["mirror"] == server.url and list(record["files"]) == download.names()
    for name, e in record["files"].items():
        assert e["status"] == "downloaded" and e["size"] == len(release[name]) and e["url"] == f"{server.url}/{name}"
        assert e["md5"] == hashlib.md5(release[name]).hexdigest() and e["downloaded"]
    assert "images_012.tar.gz" in r.stderr and "downloaded" in r.stderr and "size only" in r.stderr

    r = run_tool("download_nih.py", "--out", out, "--mirror", server.url, "--only", "images_001.tar.gz,test_list.txt")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "download.json").read_text())
    assert record["complete"] and record["files"]["images_001.tar.gz"]["status"] == "skipped"
    assert record["files"]["images_001.tar.gz"]["md5"] == hashlib.md5(release["images_001.tar.gz"]).hexdigest()
    assert record["files"]["images_002.tar.gz"]["status"] == "downloaded"  # kept from the first run


def test_cli_errors_are_one_line_with_exit_2(server, tmp_path):
    r = run_tool("download_nih.py", "--out", tmp_path, "--only", "images_001.tar.gz,nope.csv")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --only: unknown file name(s) nope.csv; valid names: images_001.tar.gz ... images_012.tar.gz, "
        "Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt (comma-separated)"]

    # without a mirror the csv cannot be fetched: no network needed to say so
    r = run_tool("download_nih.py", "--out", tmp_path, "--only", "Data_Entry_2017_v2020.csv")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "error: Data_Entry_2017_v2020.csv cannot be downloaded automatically")
    assert "nihcc.app.box.com/v/ChestXray-NIHCC" in r.stderr and not (tmp_path / "Data_Entry_2017_v2020.csv").exists()

    del server.files["images_001.tar.gz"]
    r = run_tool("download_nih.py", "--out", tmp_path, "--mirror", server.url, "--only", "images_001.tar.gz")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"error: images_001.tar.gz could not be downloaded from {server.url}/images_001.tar.gz: HTTP 404 Not Found; "
        "re-running downloads it again")


# ---------------------------------------------------------------- servers that lie: bounded retries, content checks


def test_a_server_that_ignores_range_and_cuts_every_body_is_given_up_on(server, release, tmp_path):
    name = ARCHIVES[0]
    server.ignore_range, server.always_drop[name] = True, len(release[name]) // 2
    with pytest.raises(download.DownloadError, match=r"after 3 retries"):
        fetch(f"{server.url}/{name}", tmp_path / name, retries=3, timeout=5, backoff=0)
    assert len(server.gets(name)) == 4  # retries bound all attempts, not only those in a row without bytes
    assert not (tmp_path / name).exists()


def test_the_deadline_bounds_a_download_that_keeps_failing(server, release, tmp_path):
    name = ARCHIVES[1]
    server.ignore_range, server.always_drop[name] = True, 100
    t0 = time.monotonic()
    with pytest.raises(download.DownloadError, match="deadline"):
        fetch(f"{server.url}/{name}", tmp_path / name, retries=1000, timeout=5, backoff=0.05, deadline=0.5)
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / name).exists()


def test_a_body_without_a_size_cut_short_is_not_saved_as_complete(server, release, tmp_path):
    name = ARCHIVES[0]  # a real NIH-style archive
    server.no_length.add(name)
    server.short[name] = 300
    with pytest.raises(download.DownloadError, match="cut short|damaged"):
        fetch(f"{server.url}/{name}", tmp_path / name, retries=0, timeout=5, backoff=0)
    assert not (tmp_path / name).exists()
    server.short.clear()  # the same server, whole this time: accepted without a size
    got = fetch(f"{server.url}/{name}", tmp_path / name, retries=0, timeout=5, backoff=0)
    assert (tmp_path / name).read_bytes() == release[name] and got.total is None


@pytest.mark.parametrize("name", ["Data_Entry_2017_v2020.csv", "test_list.txt", ARCHIVES[2]])
def test_a_sign_in_page_served_as_plain_text_is_refused(server, tmp_path, name):
    server.files[name] = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"
    server.content_type[name] = "text/plain"
    with pytest.raises(download.DownloadError, match="web page|not a gzip"):
        fetch(f"{server.url}/{name}", tmp_path / name, retries=0, timeout=5, backoff=0)
    assert not (tmp_path / name).exists() and not list(tmp_path.glob("*.part"))


def test_a_csv_cut_mid_line_without_a_size_is_refused(server, release, tmp_path):
    name = "Data_Entry_2017_v2020.csv"
    server.no_length.add(name)
    server.short[name] = 7
    with pytest.raises(download.DownloadError, match="middle of a line"):
        fetch(f"{server.url}/{name}", tmp_path / name, retries=0, timeout=5, backoff=0)


def test_content_check_accepts_what_gzip_and_tarfile_accept(release, tmp_path):
    archive = release[ARCHIVES[0]]
    cases = {"padded.tar.gz": archive + bytes(1024), "two-members.tar.gz": archive + gzip.compress(b"", mtime=0),
             "plain.tar.gz": archive}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert download.content_problem(name, tmp_path / name, size_known=False) is None, name
    (tmp_path / "cut.tar.gz").write_bytes(archive[:-20])
    assert "cut short" in download.content_problem("cut.tar.gz", tmp_path / "cut.tar.gz", size_known=False)
    (tmp_path / "a.csv").write_bytes(release["Data_Entry_2017_v2020.csv"].rstrip(b"\n"))  # no final newline
    assert download.content_problem("a.csv", tmp_path / "a.csv", size_known=True) is None
