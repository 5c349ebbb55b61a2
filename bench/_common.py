"""Helpers shared by the benchmark scripts: source images, timing, tables, the machine, and docs/benchmarks.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
FULLRES = ROOT.parent / "shared" / "data" / "nih-fullres"  # 18 real 1024x1024 8-bit NIH radiographs
console = Console()

_HEADER = """# Benchmarks

Speed, size and quality measurements, written by the scripts in `bench/` (`make bench` runs the speed ones;
the GAN quality runs take longer and are run by hand: `python bench/improved_lr.py`, `python bench/gan_quality.py`).
Each section is replaced when its script runs again; the command, machine and date under each table say
where its numbers come from. Rates are images per second from the best (shortest) of repeated runs: the
machine these were measured on is small and shared, and the best run is the one least disturbed by other work
(how much other work shared the CPUs during each script is recorded with its results).
"""


def fullres_pngs(src: str | Path | None = None) -> list[Path]:
    """The real full-resolution radiographs the benchmarks are run on."""
    src = Path(src) if src else FULLRES
    files = sorted(src.glob("*.png"))
    if not files:
        sys.exit(f"no PNGs in {src}: pass --src DIR with real radiographs (e.g. ../shared/data/nih-fullres)")
    return files


def best_time(fn, repeat: int) -> float:
    """Shortest wall time in seconds of ``repeat`` calls of ``fn()``."""
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def show_table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print the rows as a rich table; return them as a markdown table."""
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


ARMS_COMPARED = ("real", "real+oversampling", "real+augmentation")  # the arms a synthetic arm's Δ columns are against


def arm_cells(summary: dict, p_values: bool = False, missing: str = "–") -> list[str]:
    """One classifier arm's ``metrics.json`` (train_resnet's seed summary) as table cells: test AUROC with its
    seed-aware interval, then its paired ΔAUROC against each of ARMS_COMPARED (``missing`` where not compared)."""
    lo, hi = summary["auroc_ci95"]
    comps = {Path(c["baseline"]).name: c for c in summary.get("comparisons", [])}
    cells = [f"{summary['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"]
    for arm in ARMS_COMPARED:
        c = comps.get(arm)
        cells.append(missing if c is None else f"{c['delta_auroc']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
                     + (f" p {c['p_value']:.2g}" if p_values else ""))
    return cells


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, of this process and its waited-for children) so far (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    machine_busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    t = os.times()
    return machine_busy, t.user + t.system + t.children_user + t.children_system


_start: tuple[float, float, float] | None = None


def record_start() -> None:
    """Call first in a script's main, so the results can say how much other work shared the CPUs.
    (Not at import: spawned worker processes import the script too.)"""
    global _start
    _start = (time.monotonic(), *_cpu_seconds())


def other_load() -> str:
    """The share of all CPUs busy with work other than this script since ``record_start``."""
    if _start is None or not Path("/proc/stat").exists():
        return "not measured"
    wall, machine_busy, own = time.monotonic() - _start[0], *_cpu_seconds()
    other = (machine_busy - _start[1]) - (own - _start[2])
    return f"{max(0.0, 100 * other / (wall * os.cpu_count())):.0f}% of the CPUs"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libs = ", ".join(f"{name} {version(dist)}" for name, dist in
                     (("torch", "torch"), ("h5py", "h5py"), ("pillow", "pillow"), ("numpy", "numpy")))
    return (f"{cpu_model()}, {cores} cores usable ({os.cpu_count()} online); Python {platform.python_version()}, "
            f"{libs}; other work on the machine during the run: {other_load()}")


def command() -> str:
    """This script's command line, as run from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_section(key: str, title: str, body: str, out: str | Path | None = None) -> None:
    """Replace (or append) the ``key`` section of ``out`` (default docs/benchmarks.md) between marker comments;
    ``out=""`` writes nothing."""
    if out == "":
        return
    out = Path(out) if out else DOC
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    section = (f"<!-- bench:{key} -->\n## {title}\n\n{body.strip()}\n\n"
               f"- Command: `{command()}`\n- Machine: {machine()}\n- Date: {date}\n<!-- /bench:{key} -->")
    text = out.read_text() if out.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"updated the '{title}' section of {out}")
