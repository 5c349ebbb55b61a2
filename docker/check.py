#!/usr/bin/env python3
"""`make docker-test`: build docker/Dockerfile and run the image as docker/README.md tells users to.

1. The engine: docker when its daemon answers, else podman. As root, podman, podman-docker (a `docker` command),
   runc and debootstrap are installed with apt-get when missing. Where podman's default runtime cannot start a
   container (this sandbox: crun's setrlimit and cgroups errors), runc with explicit ulimits is used through a
   containers.conf of our own (CONTAINERS_CONF; nothing of the machine's is changed).
2. A stand-in base: Debian bookworm made with `debootstrap --variant=minbase`, cached as a tarball under
   build/docker/ and imported as localhost/cxrgan-base:bookworm. The CUDA base cannot be pulled here; what the
   stand-in lacks is listed in docker/README.md.
3. The image, built with `--build-arg BASE=` the stand-in and the project's exact pins. pip inside the build
   gets this machine's own package index: the local folders of the host's pip configuration are mounted read-only
   (podman build -v), with a pip.conf and the host's CA bundle; no model weights are downloaded.
4. The runs, each with the literal `docker run` (podman-docker's command when the engine is podman):
   the image's user is not root; `tools/sample.py --n 500` against a tiny checkpoint this script trains into a
   mounted outputs/ (500 images per class, files owned by the calling user with --user, and by uid 1000 without);
   a bad input (no checkpoint) exits non-zero with a one-line error and writes nothing; `make smoke` exits 0.

Where no engine can run a container here it prints "docker-test: SKIPPED: <why>" and exits 0 (1 with
--require). Timings, the image size and every check go to build/docker/report.json.

    python docker/check.py [--require] [--keep-image/--nokeep-image] [--work build/docker]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fire
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
BASE_TAG = "localhost/cxrgan-base:bookworm"
IMAGE = "cxrgan"
PACKAGES = ("podman", "podman-docker", "runc", "debootstrap")
DEBOOTSTRAP = ["debootstrap", "--variant=minbase", "bookworm"]
RUNC_CONF = """# docker/check.py: podman with runc and explicit ulimits
# (crun cannot set RLIMIT_NOFILE in some sandboxes)
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""
console = Console(highlight=False)


class Skip(Exception):
    """No engine can build or run a container on this machine."""


class Failed(Exception):
    """A check failed."""


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 1800, check: bool = True,
        quiet: bool = False) -> subprocess.CompletedProcess:
    if not quiet:
        console.print(f"[dim]$ {' '.join(cmd)}[/dim]")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise Failed(f"`{' '.join(cmd)}` exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
    return r


def pip_local_sources(config_lines: list[str]) -> tuple[dict[str, list[str]], list[str], str | None]:
    """From `pip config list` lines: the index settings (index-url, extra-index-url, find-links and their values),
    the local folders they name (to mount read-only at the same path) and the CA bundle pip uses, if any."""
    settings: dict[str, list[str]] = {}
    folders: list[str] = []
    cert = None
    for line in config_lines:
        key, sep, value = line.partition("=")
        name, values = key.rsplit(".", 1)[-1], value.strip().strip("'\"").split()
        if not sep or not values:
            continue
        if name == "cert":
            cert = values[0]
        if name not in ("index-url", "extra-index-url", "find-links"):
            continue
        for v in values:
            if v not in settings.setdefault(name, []):
                settings[name].append(v)
            path = Path(v.removeprefix("file://")) if v.startswith(("file://", "/")) else None
            if path is None:
                continue
            # a local index's simple/ pages point at files beside that folder: mount the folder above simple/
            folder = str(path.parent if path.name == "simple" or not path.is_dir() else path)
            if Path(folder).is_dir() and folder not in folders:
                folders.append(folder)
    return settings, folders, cert


def pip_conf_text(settings: dict[str, list[str]], cert_in_container: str | None) -> str:
    lines = ["[global]"] + [f"{k} = {' '.join(v)}" for k, v in settings.items()]
    if cert_in_container:
        lines.append(f"cert = {cert_in_container}")
    return "\n".join(lines) + "\n"


def one_line_error(stderr: str) -> bool:
    """A tool's refusal as the standards want it: a single line starting "error:" (after any engine notices)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("Emulate Docker CLI")]
    return len(lines) == 1 and lines[0].startswith("error:")


class Check:
    def __init__(self, work: Path):
        self.work = work
        self.env = dict(os.environ)
        self.engine = ""
        self.docker = ""  # the `docker` command the runs use
        self.report: dict = {"checks": {}, "seconds": {}}

    # ---- 1. the engine ----
    def find_engine(self) -> None:
        if shutil.which("docker") and run(["docker", "info"], check=False, quiet=True, timeout=60).returncode == 0:
            self.engine = self.docker = "docker"
            return
        if not all(shutil.which(c) for c in ("podman", "runc", "debootstrap")) or not self._podman_docker():
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                raise Skip(f"no docker daemon answers and {', '.join(PACKAGES)} are not all installed "
                           "(as root: apt-get install " + " ".join(PACKAGES) + ")")
            self._apt_install()
        self.engine = "podman"
        self.docker = self._podman_docker() or ""
        if not self.docker:
            raise Skip("podman-docker's `docker` command is missing after apt-get install podman-docker")

    def _apt_install(self) -> None:
        env = {**self.env, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if run(cmd, env=env, check=False).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, check=False)
            r = run(cmd, env=env, check=False)
            if r.returncode != 0:
                raise Skip(f"apt-get could not install {' '.join(PACKAGES)}: {r.stderr.strip()[-300:]}")

    @staticmethod
    def _podman_docker() -> str | None:
        """podman-docker's `docker` (a script that runs podman), wherever it is on PATH (a docker client without a
        daemon may come first)."""
        for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
            path = Path(folder) / "docker"
            try:
                if path.is_file() and b"podman" in path.read_bytes()[:4096]:
                    return str(path)
            except OSError:
                continue
        return None

    # ---- 2. the stand-in base ----
    def base(self) -> None:
        t = time.monotonic()
        have = run([self.engine, "image", "inspect", BASE_TAG], check=False, quiet=True).returncode == 0
        tarball = self.work / "base-bookworm.tar"
        if not have:
            if not tarball.is_file():
                if not shutil.which("debootstrap"):
                    raise Skip("debootstrap is missing (apt-get install debootstrap)")
                rootfs = self.work / "base-rootfs"
                shutil.rmtree(rootfs, ignore_errors=True)
                r = run([*DEBOOTSTRAP, str(rootfs), "http://deb.debian.org/debian"], check=False, timeout=1200)
                if r.returncode != 0:
                    raise Skip(f"debootstrap could not build the stand-in base: {(r.stdout + r.stderr)[-300:]}")
                tmp = tarball.with_suffix(".tar.tmp")
                run(["tar", "-C", str(rootfs), "-cf", str(tmp), "."])
                os.replace(tmp, tarball)
                shutil.rmtree(rootfs)
            run([self.engine, "import", str(tarball), BASE_TAG])
        self.report["seconds"]["base"] = round(time.monotonic() - t, 1)
        # can this engine start a container at all? podman: its defaults, else runc with explicit ulimits
        probe = [self.engine, "run", "--rm", BASE_TAG, "true"]
        if run(probe, check=False, env=self.env).returncode != 0:
            if self.engine != "podman" or not shutil.which("runc"):
                raise Skip(f"{self.engine} cannot start a container here")
            conf = self.work / "containers.conf"
            conf.write_text(RUNC_CONF)
            self.env["CONTAINERS_CONF"] = str(conf)
            r = run(probe, check=False, env=self.env)
            if r.returncode != 0:
                raise Skip(f"podman cannot start a container here, with crun or runc: {r.stderr.strip()[-300:]}")
            self.report["runtime"] = "runc (containers.conf with explicit ulimits)"

    # ---- 3. the image ----
    def build(self) -> None:
        cmd = [self.engine, "build", "-f", "docker/Dockerfile", "--build-arg", f"BASE={BASE_TAG}", "-t", IMAGE]
        if self.engine == "podman":
            cmd[2:2] = ["--format", "docker"]  # the OCI format drops the Dockerfile's SHELL (pipefail)
            lines = run([sys.executable, "-m", "pip", "config", "list"], check=False, quiet=True).stdout.splitlines()
            settings, folders, cert = pip_local_sources(lines)
            cert = cert or ("/etc/ssl/certs/ca-certificates.crt"
                            if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else None)
            conf = self.work / "pip.conf"
            conf.write_text(pip_conf_text(settings, "/etc/pip-host-ca.crt" if cert else None))
            mounts = [*(f"{f}:{f}:ro" for f in folders), f"{conf}:/etc/pip.conf:ro"]
            if cert:
                mounts.append(f"{cert}:/etc/pip-host-ca.crt:ro")
            for m in mounts:
                cmd[2:2] = ["-v", m]
            self.report["pip_sources"] = {"settings": settings, "mounted": folders}
        t = time.monotonic()
        r = run([*cmd, "."], env=self.env, timeout=3600, check=False)
        (self.work / "build.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise Failed(f"the image build failed (log: {self.work / 'build.log'}):\n{(r.stdout + r.stderr)[-3000:]}")
        self.report["seconds"]["build"] = round(time.monotonic() - t, 1)
        fmt = "{{.Size}}"
        size = run([self.engine, "image", "inspect", IMAGE, "--format", fmt], env=self.env, quiet=True).stdout
        self.report["image_bytes"] = int(size.strip())

    # ---- 4. the runs ----
    def docker_run(self, *args: str, check_rc: bool = True) -> subprocess.CompletedProcess:
        r = run([self.docker, "run", "--rm", *args], env=self.env, check=False, timeout=1800)
        if check_rc and r.returncode != 0:
            raise Failed(f"docker run {' '.join(args)} exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
        return r

    def ok(self, name: str, passed: bool, detail: str) -> None:
        self.report["checks"][name] = {"passed": passed, "detail": detail}
        console.print(f"{'[green]ok[/green]' if passed else '[red]FAILED[/red]'}  {name}: {detail}")
        if not passed:
            raise Failed(f"{name}: {detail}")

    def runs(self) -> None:
        import h5py

        uid = self.docker_run(IMAGE, "id", "-u").stdout.strip()
        self.ok("non-root user", uid not in ("", "0"), f"the image runs as uid {uid}")

        # a tiny checkpoint in a mounted outputs/ (trained here, with the project's own tools)
        mount = self.work / "run"
        shutil.rmtree(mount, ignore_errors=True)
        data, outputs = mount / "data", mount / "outputs"
        data.mkdir(parents=True)
        outputs.mkdir()
        py = [sys.executable]
        run([*py, "tools/make_phantoms.py", "--out", str(data / "phantom-32.h5"), "--n", "60", "--size", "32",
             "--seed", "0"])
        run([*py, "tools/train_dcgan.py", "--data", str(data / "phantom-32.h5"), "--out", str(outputs / "gan" /
             "limited"), "--epochs", "1", "--seed", "0", "--device", "cpu", "--base", "8", "--batch", "16",
             "--grid", "4", "--recipe", "limited"])
        volumes = ["-v", f"{data}:/app/data", "-v", f"{outputs}:/app/outputs"]
        user = ["--user", f"{os.getuid()}:{os.getgid()}"]

        # the bad input first, while nothing is written: no checkpoint where --root points
        r = self.docker_run(*volumes, *user, IMAGE, "tools/sample.py", "--n", "500", "--root", "outputs/none",
                            check_rc=False)
        self.ok("bad input", r.returncode != 0 and one_line_error(r.stderr)
                and not (outputs / "synthetic.h5").exists(),
                f"no checkpoint: exit {r.returncode}, {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")

        t = time.monotonic()
        self.docker_run(*volumes, *user, IMAGE, "tools/sample.py", "--n", "500")
        self.report["seconds"]["sample"] = round(time.monotonic() - t, 1)
        out = outputs / "synthetic.h5"
        with h5py.File(out, "r") as f:
            labels = f["synthetic/labels"][:].tolist()
        counts = {c: labels.count(c) for c in sorted(set(labels))}
        self.ok("sample --n 500", counts == {0: 500, 1: 500}, f"{out.name} holds {counts} images per class")
        owner = (out.stat().st_uid, out.stat().st_gid)
        self.ok("owner with --user", owner == (os.getuid(), os.getgid()),
                f"{out.name} belongs to {owner[0]}:{owner[1]}, the caller is {os.getuid()}:{os.getgid()}")

        # without --user the image's uid 1000 writes: into a folder that uid owns (a usual host layout)
        if os.geteuid() == 0:
            shutil.chown(outputs, 1000, 1000)
            os.chmod(outputs, 0o755)
            out.unlink()
            self.docker_run(*volumes, IMAGE, "tools/sample.py", "--n", "500")
            self.ok("owner without --user", out.stat().st_uid == 1000,
                    f"{out.name} belongs to uid {out.stat().st_uid} (the image's user, owner of outputs/)")

        t = time.monotonic()
        r = self.docker_run(IMAGE, "make", "smoke", check_rc=False)
        self.report["seconds"]["smoke"] = round(time.monotonic() - t, 1)
        tail = (r.stdout + r.stderr).strip().splitlines()
        self.ok("make smoke", r.returncode == 0 and "smoke: REPORT.md built" in r.stdout,
                f"exit {r.returncode}; {tail[-1] if tail else ''}")
        if r.returncode != 0:
            console.print("\n".join(tail[-40:]))


def main(require: bool = False, keep_image: bool = True, work: str = "build/docker") -> None:
    """Build the image on a stand-in base and run it (see the module's docstring).

    Args:
        require: exit 1 instead of skipping where no engine can run a container here.
        keep_image: keep the built image (tag cxrgan) afterwards; --nokeep-image removes it (about 7 GB).
        work: the folder for the cached base, the build log, the mounted folders and report.json.
    """
    os.chdir(ROOT)
    check = Check(Path(work).resolve())
    check.work.mkdir(parents=True, exist_ok=True)
    report = check.work / "report.json"
    t = time.monotonic()
    status = 0
    try:
        check.find_engine()
        check.report["engine"], check.report["docker"] = check.engine, check.docker
        check.base()
        check.build()
        check.runs()
        check.report["result"] = "passed"
    except Skip as e:
        check.report["result"] = f"skipped: {e}"
        console.print(f"[bold yellow]docker-test: SKIPPED: {e}[/bold yellow]")
        status = 1 if require else 0
    except Failed as e:
        check.report["result"] = f"failed: {str(e).splitlines()[0]}"
        console.print(f"[bold red]docker-test: FAILED: {e}[/bold red]")
        status = 1
    finally:
        check.report["seconds"]["total"] = round(time.monotonic() - t, 1)
        shutil.rmtree(check.work / "run", ignore_errors=True)
        if not keep_image and check.engine:
            run([check.engine, "rmi", "-f", IMAGE], env=check.env, check=False)
        tmp = report.with_suffix(".tmp")
        tmp.write_text(json.dumps(check.report, indent=2) + "\n")
        os.replace(tmp, report)
    if check.report["result"] == "passed":
        size = check.report.get("image_bytes", 0) / 1e9
        console.print(f"docker-test: passed in {check.report['seconds']['total']:.0f} s (build "
                      f"{check.report['seconds'].get('build', 0):.0f} s, image {size:.2f} GB); {report}")
    sys.exit(status)


if __name__ == "__main__":
    fire.Fire(main)
