#!/usr/bin/env python3
"""The container image: its size and how long `make docker-test` takes to build and run it (docker/check.py: a
Debian stand-in base, the project's exact pins from the machine's package index, then `docker run ... cxrgan
tools/sample.py --n 500`, a bad input and `make smoke` inside the image).

Runs docker/check.py (with --require: a machine where no engine runs has nothing to measure) and writes its
build/docker/report.json as the "Container image" section of docs/benchmarks.md. A base image already imported
on this machine, or the build's cached layers, make a run faster: --fresh removes both first.
"""

import json
import subprocess
import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import ROOT, record_start, show_table, write_section  # noqa: E402

STEPS = (("base", "stand-in base: debootstrap, tarball, import (cached after the first run)"),
         ("build", "image build (apt-get, pip install -r requirements.txt, the project)"),
         ("sample", "`docker run ... cxrgan tools/sample.py --n 500` (1,000 images at 32x32)"),
         ("smoke", "`docker run ... cxrgan make smoke`"),
         ("total", "make docker-test in all (with the tiny checkpoint, the ownership and bad-input runs)"))


def main(fresh: bool = False, out: str | None = None) -> None:
    """Run make docker-test's script and record the image's size and the time of each step.

    Args:
        fresh: first remove the image, the stand-in base (its tarball and image) and the engine's build cache, so
            the times are those of a new machine (CI's case).
        out: the markdown file to update (default docs/benchmarks.md; "" writes nothing).
    """
    record_start()
    work = ROOT / "build" / "docker"
    if fresh:
        for cmd in (["podman", "rmi", "-f", "cxrgan", "localhost/cxrgan-base:bookworm"],
                    ["podman", "system", "prune", "-f"]):
            subprocess.run(cmd, capture_output=True)
        (work / "base-bookworm.tar").unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(ROOT / "docker" / "check.py"), "--require"], cwd=ROOT)
    report = json.loads((work / "report.json").read_text())
    if r.returncode != 0:
        sys.exit(f"error: make docker-test did not pass ({report.get('result')}); nothing recorded")
    seconds = report["seconds"]
    rows = [[what, f"{seconds[key]:.0f} s"] for key, what in STEPS if key in seconds]
    rows.append(["image size (`" + report["engine"] + " image inspect`)", f"{report['image_bytes'] / 1e9:.2f} GB"])
    table = show_table("make docker-test", ["step", "measured"], rows)
    checks = "; ".join(f"{name} ({c['detail']})" for name, c in report["checks"].items())
    body = (f"{table}\n\nEngine: {report['engine']} (`{report['docker']}` for `docker run`), runtime "
            f"{report.get('runtime', 'the engine default')}; "
            f"{'a fresh machine: no cached base or layers' if fresh else 'caches as found'}. "
            f"Checks passed: {checks}. The stand-in base is Debian bookworm, not the CUDA base (docker/README.md "
            "says what only a GPU host verifies). The image is mostly torch's CUDA build and its NVIDIA libraries "
            "in /opt/venv, as in .venv. The containers run in their own cgroup, so niced background work on the "
            "machine slows them more than it slows the host's processes; and the share of \"other work\" below "
            "counts the containers' own processes, which run outside this script's process tree.")
    write_section("container", "Container image", body, out)


if __name__ == "__main__":
    fire.Fire(main)
