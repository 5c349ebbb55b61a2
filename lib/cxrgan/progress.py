"""The progress view of a `make` run: which stage of how many is running, the time since the run began, and an
estimate of what is left, printed as each stage starts.

The Makefile runs every tool command through it (system python; nothing here imports numpy or torch):

    python progress.py stage OUTPUTS RUN NAME -- CMD ...

RUN identifies one `make` (its process id). The first stage of a run asks make for the run's plan: a dry run
(`make -n` with the same goals and variables, $CXRGAN_PROGRESS_GOALS and $MAKEFLAGS) lists the stages still to
build, which it prints with an estimate of their time. Each stage then prints "stage 3/9: NAME", the time since the
run began and an estimate of what is left, runs CMD (its output passes through) and keeps its time.

The run's state is OUTPUTS/.progress/run.json; the seconds of finished stages are kept in
OUTPUTS/.progress/times.json under $CXRGAN_PROGRESS_KEY (the variables that set the stages' sizes), so a later run
with the same key is estimated from the last one. The defaults' key starts from the README's measured laptop run
(TYPICAL).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

STATE, TIMES = "run.json", "times.json"
# `make all` with every default on a quiet 2-core CPU (README, stage table); the key the Makefile passes then
TYPICAL_KEY = "nih-mini laptop size64 kimg- epochs- clf6 seeds3 synth500 controls=oversample"
TYPICAL = {"data": 2, "classify:real": 46, "classify:real+oversample": 75, "gan:laptop": 245, "samples": 3,
           "classify:real+synthetic-laptop": 73, "metrics:domain": 13, "report": 9}
STAGE_LINE = re.compile(r"progress\.py stage \S+ \S+ (\S+) --")


def _folder(outputs: str) -> Path:
    return Path(outputs) / ".progress"


@contextmanager
def _locked(outputs: str):
    """The run's state, read and written under a lock (make -j runs stages side by side)."""
    folder = _folder(outputs)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / STATE
        state = json.loads(path.read_text()) if path.is_file() else {}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)


def _times(outputs: str, key: str) -> dict[str, float]:
    path = _folder(outputs) / TIMES
    kept = json.loads(path.read_text()).get(key, {}) if path.is_file() else {}
    return kept or (dict(TYPICAL) if key == TYPICAL_KEY else {})


def _keep_time(outputs: str, key: str, name: str, seconds: float) -> None:
    path = _folder(outputs) / TIMES
    kept = json.loads(path.read_text()) if path.is_file() else {}
    kept.setdefault(key, {})[name] = round(seconds, 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=1, sort_keys=True))
    os.replace(tmp, path)


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def estimate_left(names: list[str], times: dict[str, float], running: dict[str, float], now: float) -> str:
    """What is left of a run whose remaining stages are ``names`` (not started) and ``running`` (name: start time),
    from the kept times; "not known" when a stage has none (a first run with these settings)."""
    if any(n not in times for n in [*names, *running]):
        return "time left not known yet (no finished run with these settings)"
    left = sum(times[n] for n in names) + sum(max(0.0, times[n] - (now - t0)) for n, t0 in running.items())
    return f"about {clock(left)} left"


def stage_names(dry_run: str) -> list[str]:
    """The stage names of a `make -n` output, in order."""
    return STAGE_LINE.findall(dry_run)


def dry_run_plan() -> list[str]:
    """The stages the current make still has to run, from a dry run with its goals and variables (without its
    jobserver, which a dry run does not need); [] when that fails."""
    flags = re.sub(r"--jobserver-(auth|fds)=\S+", "", os.environ.get("MAKEFLAGS", ""))
    goals = os.environ.get("CXRGAN_PROGRESS_GOALS", "all").split()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MFLAGS")}
    env["MAKEFLAGS"] = flags
    try:
        r = subprocess.run([os.environ.get("MAKE", "make"), "-n", "--no-print-directory", *goals], env=env,
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return stage_names(r.stdout) if r.returncode == 0 else []


def stage(outputs: str, run: str, name: str, *cmd: str) -> int:
    """Announce stage ``name`` of make run ``run``, run ``cmd`` (its output passes through) and keep its time;
    returns its exit status."""
    now = time.time()
    key = os.environ.get("CXRGAN_PROGRESS_KEY", "")
    with _locked(outputs) as state:
        if state.get("run") != run:  # the first stage of this make: its plan, from a dry run
            names = dry_run_plan()
            state.clear()
            state.update({"run": run, "plan": names if name in names else [name, *names], "start": now,
                          "started": {}, "done": []})
            plan = state["plan"]
            print(f"progress: {len(plan)} stage(s) to run: {', '.join(plan)}; "
                  f"{estimate_left(plan, _times(outputs, key), {}, now)}", flush=True)
        if name not in state["plan"]:
            state["plan"].append(name)
        state["started"][name] = now
        start, plan = state["start"], state["plan"]
        waiting = [n for n in plan if n not in state["started"]]
        running = {n: t for n, t in state["started"].items() if n not in state["done"] and n != name}
        running[name] = now
    number, total = plan.index(name) + 1, len(plan)
    left = estimate_left(waiting, _times(outputs, key), running, now)
    print(f"── stage {number}/{total}: {name} · {clock(now - start)} since the run began · {left}",
          flush=True)
    status = subprocess.call(list(cmd))
    seconds = time.time() - now
    with _locked(outputs) as state:
        state.setdefault("done", []).append(name)
        if status == 0:
            _keep_time(outputs, key, name, seconds)
    word = "done" if status == 0 else f"FAILED (exit {status})"
    print(f"── stage {number}/{total}: {name} {word} in {clock(seconds)} · {clock(time.time() - start)} since the "
          "run began", flush=True)
    return status


def main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[0] == "stage" and argv[4] == "--":
        return stage(argv[1], argv[2], argv[3], *argv[5:])
    print("usage: progress.py stage OUTPUTS RUN NAME -- CMD ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
