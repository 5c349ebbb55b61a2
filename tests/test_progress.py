"""The progress view of a make run (lib/cxrgan/progress.py): the plan from a dry run, each stage's number of how
many, the time since the start and the estimate of what is left from the last run's times."""

import json
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "lib"))
from cxrgan import progress  # noqa: E402

# a two-stage pipeline in the Makefile's own style: every command runs as a stage of this make
MAKEFILE = f"""OUTPUTS ?= out
N ?= 1
MAKE_PID := $(shell echo $$PPID)
stage = {sys.executable} {ROOT}/lib/cxrgan/progress.py stage $(OUTPUTS) $(MAKE_PID) $(1) --
export CXRGAN_PROGRESS_GOALS := $(or $(MAKECMDGOALS),all)
export CXRGAN_PROGRESS_KEY := n$(N)
all: $(OUTPUTS)/b
$(OUTPUTS)/a:
\t$(call stage,first) sh -c 'sleep 0.2; mkdir -p $(OUTPUTS); echo $(N) > $@'
$(OUTPUTS)/b: $(OUTPUTS)/a
\t$(call stage,second) sh -c 'echo tool$$((1+1))output; test "$(FAIL)" != 1 && cp $< $@'
"""


def _make(folder, *args):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=folder, capture_output=True, text=True,
                          timeout=60)


def test_a_run_shows_each_stage_of_how_many_and_what_is_left(tmp_path):
    (tmp_path / "Makefile").write_text(MAKEFILE)
    r = _make(tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "progress: 2 stage(s) to run: first, second; time left not known yet" in out
    assert "── stage 1/2: first · 0:00 since the run began" in out and "── stage 2/2: second" in out
    assert out.index("stage 2/2: second ·") < out.index("tool2output") < out.index("stage 2/2: second done")
    times = json.loads((tmp_path / "out" / ".progress" / "times.json").read_text())
    assert set(times["n1"]) == {"first", "second"} and times["n1"]["first"] >= 0.2

    # the same settings again: estimated from the last run; only what is left to build is planned
    (tmp_path / "out" / "b").unlink()
    out = _make(tmp_path).stdout
    assert "progress: 1 stage(s) to run: second; about 0:00 left" in out and "── stage 1/1: second" in out
    assert "first" not in out
    # other settings: no estimate yet
    out = _make(tmp_path, "N=2", "OUTPUTS=other").stdout
    assert "time left not known yet" in out and (tmp_path / "other" / "b").read_text() == "2\n"


def test_a_failed_stage_says_so_and_keeps_no_time(tmp_path):
    (tmp_path / "Makefile").write_text(MAKEFILE)
    r = _make(tmp_path, "FAIL=1")
    assert r.returncode != 0 and "── stage 2/2: second FAILED (exit 1)" in r.stdout
    times = json.loads((tmp_path / "out" / ".progress" / "times.json").read_text())
    assert list(times["n1"]) == ["first"]


def test_estimates_count_what_is_running_and_what_waits():
    times = {"a": 60, "b": 120, "c": 30}
    assert progress.estimate_left(["b", "c"], times, {"a": 100.0}, now=130.0) == "about 3:00 left"  # 30 + 120 + 30
    assert progress.estimate_left(["b"], times, {"a": 0.0}, now=500.0) == "about 2:00 left"  # an overrun counts 0
    assert progress.estimate_left(["d"], times, {}, now=0).startswith("time left not known")
    assert progress.clock(3725) == "1:02:05" and progress.clock(65) == "1:05"


def test_the_default_run_starts_from_the_readme_times_and_the_plan_parses_make_n():
    assert progress._times("/nonexistent", progress.TYPICAL_KEY) == progress.TYPICAL
    r = subprocess.run(["make", "-n", "all", "OUTPUTS=/tmp/cxrgan-progress-plan"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    names = progress.stage_names(r.stdout)
    assert names[0] == "data" and names[-1] == "report" and set(progress.TYPICAL) <= set(names)
    key = subprocess.run(["make", "-p", "-n", "help"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert f"CXRGAN_PROGRESS_KEY := {progress.TYPICAL_KEY}\n" in key  # the defaults' key is the README run's
