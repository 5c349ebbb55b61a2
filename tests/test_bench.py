"""bench/: the shared helpers that decide what a benchmark's numbers mean (equal training time, continued runs, table
cells, work folders), and the layout of bench/speed and bench/experiments."""

import ast
import importlib.util
import json
import subprocess
import sys

import fire
import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

BENCH = ROOT / "bench"
SCRIPTS = sorted((BENCH / "speed").glob("*.py")) + sorted((BENCH / "experiments").glob("*.py"))
MAX_LINES = 90  # the longest function allowed in bench/


def test_train_for_stops_within_half_an_epoch_of_the_budget(monkeypatch):
    """A fake trainer at 7 s per epoch (after an already-trained stretch): the budget counts only new training
    time and the calls are sized so the total lands within half an epoch of it."""
    done = {"epochs": 30}  # the run resumes at epoch 30, past the first chunk asked for

    def fake_train(cfg):
        if cfg.epochs <= done["epochs"]:
            return {"epochs": done["epochs"], "trained": False}
        new = cfg.epochs - done["epochs"]
        done["epochs"] = cfg.epochs
        return {"epochs": cfg.epochs, "seconds": 7.0 * new, "kimg": cfg.epochs / 10}

    monkeypatch.setattr("cxrgan.generative.train.train", fake_train)  # train_for imports it when called
    result = common.train_for({"data": "x", "out": "y"}, minutes=10, chunk=5)
    assert abs(result["seconds"] - 600) <= 3.5
    assert done["epochs"] == 30 + round(600 / 7)
    assert result["kimg"] == done["epochs"] / 10


def test_train_for_with_a_ledger_counts_the_time_of_an_interrupted_call(monkeypatch, tmp_path):
    """A job killed after 4 minutes of a 10-minute budget, then restarted: with a ledger the second call trains
    only the remaining 6 minutes (without one it would train 10 more)."""
    done = {"epochs": 0}

    def fake_train(cfg):
        new = max(0, cfg.epochs - done["epochs"])
        done["epochs"] = max(done["epochs"], cfg.epochs)
        return {"epochs": done["epochs"], "seconds": 6.0 * new}

    monkeypatch.setattr("cxrgan.generative.train.train", fake_train)
    ledger = tmp_path / "gan-budget.json"
    common.train_for({"data": "x", "out": "y"}, minutes=4, chunk=5, ledger=ledger)  # the "first call", cut short
    assert json.loads(ledger.read_text())["epochs"] == done["epochs"] == 40
    result = common.train_for({"data": "x", "out": "y"}, minutes=10, chunk=5, ledger=ledger)
    assert abs(result["seconds"] - 600) <= 3 and done["epochs"] == 100
    assert common.train_for({"data": "x", "out": "y"}, minutes=10, ledger=ledger)["seconds"] == result["seconds"]


def test_continue_run_copies_the_training_state_but_not_the_scores(tmp_path):
    source, target = tmp_path / "run-35min-s0", tmp_path / "run-60min-s0"
    source.mkdir()
    for name in ("last.pt", "losses.csv", "metrics.csv", "best.pt", "samples.h5", "fid_is.json"):
        (source / name).write_text(name)
    (source / "scores.json").write_text(json.dumps({"seconds": 2100.5}))
    assert common.continue_run(source, target) == 2100.5
    assert sorted(p.name for p in target.iterdir()) == ["best.pt", "last.pt", "losses.csv", "metrics.csv"]
    (target / "last.pt").write_text("trained further")  # a second call (a restarted benchmark) keeps the progress
    common.continue_run(source, target)
    assert (target / "last.pt").read_text() == "trained further"


def test_continue_run_refuses_an_unfinished_source(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="no scores.json"):
        common.continue_run(tmp_path / "run", tmp_path / "longer")


def test_arm_cells_lists_each_compared_arm_in_order():
    summary = {"auroc": 0.7451, "auroc_ci95": [0.641, 0.826], "comparisons": [
        {"baseline": "/w/fraction-1/real+augmentation", "delta_auroc": 0.0, "ci95": [-0.098, 0.098], "p_value": 1.0},
        {"baseline": "/w/fraction-1/real", "delta_auroc": -0.0264, "ci95": [-0.151, 0.099], "p_value": 0.63}]}
    assert common.arm_cells(summary) == ["0.745 [0.641, 0.826]", "-0.026 [-0.151, +0.099]", "–",
                                          "+0.000 [-0.098, +0.098]"]
    assert common.arm_cells(summary, p_values=True, missing="")[1:3] == ["-0.026 [-0.151, +0.099] p 0.63", ""]


def test_work_folders_come_from_the_option_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(common.WORK_ENV, raising=False)
    assert common.work_dir(None, "quality") == ROOT / "build" / "bench" / "quality"
    monkeypatch.setenv(common.WORK_ENV, str(tmp_path))
    assert common.work_dir(None, "quality") == tmp_path / "quality"
    assert common.work_dir(str(tmp_path / "mine"), "quality") == tmp_path / "mine"


def test_bench_layout():
    """No hard-coded scratch folders, scripts never import each other (what they share is in common.py), and no
    function in bench/ is longer than MAX_LINES."""
    files = sorted(BENCH.rglob("*.py"))
    assert {p.parent.name for p in SCRIPTS} == {"speed", "experiments"} and len(SCRIPTS) >= 14
    assert [p.name for p in BENCH.glob("*.py")] == ["common.py"]  # the one shared module; scripts sit in folders
    scripts = {p.stem for p in SCRIPTS}
    for path in files:
        text = path.read_text()
        assert "/tmp/scratch" not in text, path
        tree = ast.parse(text)
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & scripts, (path, imported & scripts)
        long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES]
        assert not long, (path, long)


def _fire_component(path, monkeypatch):
    """The script imported as a module (not run), and what its ``fire.Fire(...)`` line hands to python-fire."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (dataclasses look their module up while it runs)
    spec.loader.exec_module(module)
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "fire.Fire"]
    assert len(calls) == 1, path
    return eval(compile(ast.Expression(calls[0].args[0]), str(path), "eval"), vars(module))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_imports_and_its_help_starts(path, capsys, monkeypatch):
    with pytest.raises(fire.core.FireExit) as stop:
        fire.Fire(_fire_component(path, monkeypatch), command=["--help"], name=path.name)
    assert stop.value.code == 0
    shown = capsys.readouterr()
    assert "NAME" in shown.out + shown.err  # (python-fire writes a function's help to stderr)


def test_a_script_runs_from_the_repository_root():
    """As make bench runs them: `python bench/speed/X.py` finds common.py without any setup."""
    r = subprocess.run([sys.executable, "bench/speed/compression.py", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={"PAGER": "cat", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "NAME" in r.stdout + r.stderr


def test_power_analysis_interpolates_its_detectable_effect_and_writes_its_table(tmp_path, monkeypatch):
    """bench/experiments/power.py: the 80%-power effect between grid points, the control arm's size option, and a
    tiny run's section (one design, a few replicates) with its table."""
    spec = importlib.util.spec_from_file_location("bench_power", BENCH / "experiments" / "power.py")
    power = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, power)
    spec.loader.exec_module(power)
    assert power.min_detectable([0, 0.02, 0.04], [0.05, 0.6, 1.0]) == pytest.approx(0.03)
    assert power.min_detectable([0, 0.02], [0.05, 0.5]) != power.min_detectable([0, 0.02], [0.05, 0.5])  # NaN
    assert [power.control_runs(c, 3, 5) for c in ("total", "C", 4)] == [15, 5, 4]
    out = tmp_path / "power.md"
    power.main(reps=6, designs="3x2", effects="0.01,0.18", n=100, positives=40, n_boot=30, out=str(out))
    text = out.read_text()
    assert "<!-- bench:power -->" in text and "| 3 x 2 | 6 | 6 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 3 x 2"))
    assert row.split("|")[-3].strip() == "100%"  # a gain of 0.18 AUROC (0.785 to 0.965) is always detected
    with pytest.raises(ValueError, match="above 1"):
        power.main(reps=2, designs="3x2", effects="0.3", out="")


def _study(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_study", BENCH / "experiments" / "study.py")
    study = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, study)
    spec.loader.exec_module(study)
    return study


def test_study_plan_puts_the_primary_cell_first_and_sizes_the_controls(monkeypatch, tmp_path):
    """bench/experiments/study.py: the feature networks, then the primary fraction's generator 0 with its arms and
    the control arms (G x C seeds each), every arm tested on the external set too; pretraining takes every sample."""
    study = _study(monkeypatch)
    d = study.Design("0.25,1", "limited", 3, 2, "1,2", "mix,pretrain", 33, 500, {"ema": 0.99})
    jobs = study.plan(d, tmp_path / "d.h5", tmp_path / "x.h5")
    keys = [j["key"] for j in jobs]
    assert keys[:8] == ["features/classifier", "features/cxr", "fraction-0.25/limited-gen0",
                        "fraction-0.25/limited-gen0/quality", "fraction-0.25/ratio-1/mix-limited-gen0", "fraction-0.25/ratio-1/pretrain-limited-gen0",
                        "fraction-0.25/ratio-1/real", "fraction-0.25/ratio-1/real+oversampling"]
    assert len(keys) == len(set(keys))
    arms = {j["key"]: j for j in jobs if j["kind"] == "classifier"}
    assert arms["fraction-0.25/ratio-1/real"]["config"]["seeds"] == 6  # 3 generators x 2 seeds
    assert arms["fraction-1/ratio-1/real"]["config"]["seeds"] == 6  # secondary_generators defaults to generators
    assert all(a["config"]["test_extra"].endswith("x.h5:test") and a["config"]["ema"] == 0.99 for a in arms.values())
    gen = next(j for j in jobs if j["key"] == "fraction-0.25/limited-gen1")
    assert gen["primary_arms"] == ["fraction-0.25/ratio-1/mix-limited-gen1", "fraction-0.25/ratio-1/pretrain-limited-gen1"]
    pre = arms["fraction-0.25/ratio-1/pretrain-limited-gen2"]
    assert pre["needs"] == ["fraction-0.25/limited-gen2"] and pre["config"]["synthetic_per_class"] == 500
    assert "synthetic_ratio" not in pre["config"]
    assert arms["fraction-0.25/ratio-2/mix-limited-gen1"]["config"]["synthetic"] == "fraction-0.25/limited-gen1/samples.h5"
    assert "fraction-1/ratio-2/real+oversampling" not in arms and "fraction-0.25/ratio-2/real" not in arms


def test_study_resumes_from_its_results_folder(monkeypatch, tmp_path):
    """A finished arm (metrics.json in the results folder) is not rerun; a generator whose arms are all finished
    is not retrained, one with an unfinished arm is (unless its samples are in the work folder), and the feature
    networks are built only for a generator still to score."""
    study = _study(monkeypatch)
    d = study.Design("0.25", "limited", 2, 1, "1", "mix", 1, 10, None)
    jobs = study.plan(d, tmp_path / "d.h5", tmp_path / "x.h5")
    results, work = tmp_path / "results", tmp_path / "work"

    def done(key, marker):
        (results / key).mkdir(parents=True, exist_ok=True)
        (results / key / marker).write_text("{}")
    for key in ("fraction-0.25/ratio-1/real", "fraction-0.25/ratio-1/mix-limited-gen0"):
        done(key, "metrics.json")
    for g in (0, 1):
        done(f"fraction-0.25/limited-gen{g}", "generator.json")
    left = [j["key"] for j in study.to_run(jobs, results, work)]
    assert left == ["fraction-0.25/ratio-1/real+oversampling", "fraction-0.25/ratio-1/real+augmentation",
                    "fraction-0.25/limited-gen1", "fraction-0.25/ratio-1/mix-limited-gen1"]
    (work / "fraction-0.25/limited-gen1").mkdir(parents=True)
    (work / "fraction-0.25/limited-gen1/samples.h5").write_bytes(b"")
    assert "fraction-0.25/limited-gen1" not in [j["key"] for j in study.to_run(jobs, results, work)]
    (results / "fraction-0.25/limited-gen0/generator.json").unlink()  # its scoring was lost: score it again
    left = [j["key"] for j in study.to_run(jobs, results, work)]
    assert left[:4] == ["features/classifier", "features/cxr", "fraction-0.25/limited-gen0",
                        "fraction-0.25/limited-gen0/quality"]


def test_study_retrains_a_generator_only_when_its_first_waiting_arm_is_due(monkeypatch, tmp_path):
    """A generator whose primary arms are finished and which only a secondary cell still needs is not retrained
    ahead of the primary cell's unfinished generators (it goes just before the first arm waiting for it)."""
    study = _study(monkeypatch)
    d = study.Design("0.25", "limited", 2, 1, "1,2", "mix", 1, 10, None)
    jobs = study.plan(d, tmp_path / "d.h5", tmp_path / "x.h5")
    results, work = tmp_path / "results", tmp_path / "work"
    for key, marker in [("fraction-0.25/ratio-1/real", "metrics.json"),
                        ("fraction-0.25/ratio-1/real+oversampling", "metrics.json"),
                        ("fraction-0.25/ratio-1/real+augmentation", "metrics.json"),
                        ("fraction-0.25/ratio-1/mix-limited-gen0", "metrics.json"),
                        ("fraction-0.25/limited-gen0", "generator.json")]:
        (results / key).mkdir(parents=True, exist_ok=True)
        (results / key / marker).write_text("{}")
    left = [j["key"] for j in study.to_run(jobs, results, work)]
    assert left.index("fraction-0.25/ratio-1/mix-limited-gen1") < left.index("fraction-0.25/limited-gen0")
    assert left.index("fraction-0.25/limited-gen0") == left.index("fraction-0.25/ratio-2/mix-limited-gen0") - 1


def test_study_quality_table_keeps_generators_scored_in_different_feature_networks_apart(monkeypatch, tmp_path):
    study = _study(monkeypatch)
    d = study.Design("0.25", "limited", 3, 1, "1", "mix", 1, 10, None)

    def record(g, nets, recall):
        per_class = {"No Finding": {"kid_mean": 0.01, "precision": 0.8, "recall": recall, "pixel_diversity": 0.9}}
        folder = tmp_path / d.gen_folder(0.25, "limited", g)
        folder.mkdir(parents=True)
        (folder / "generator.json").write_text(json.dumps({"trained": {"kimg": 1.0}, "quality": {
            s: {"network_sha256": nets[k] * 64, "per_class": per_class} for k, s in enumerate(study.SPACES)}}))
    record(0, "ab", 0.2), record(1, "ab", 0.4), record(2, "cd", 0.9)
    rows = study.quality_rows(d, tmp_path)
    assert [(r[2], r[4]) for r in rows] == [("aaaaaaaa / bbbbbbbb", "2"), ("cccccccc / dddddddd", "1")]
    assert rows[0][8].startswith("0.3 ±") and rows[1][8].startswith("0.9 ±")  # recall, ResNet-18 space


def test_study_machine_check_pairs_the_same_seeds_on_the_same_images(monkeypatch, tmp_path):
    """Two folders of one arm (seeds 0-2 and 1-3, the second's images in another order): the shared seeds are
    paired image by image; the second equal to the first gives a zero difference, a shifted copy a negative one."""
    study = _study(monkeypatch)
    rng = np.random.default_rng(0)
    y, scores = np.array([0, 1] * 20), rng.normal(size=(4, 40))
    scores[:, y == 1] += 1.0

    def arm(name, seeds, s, order):
        folder = tmp_path / name
        folder.mkdir()
        np.savez(folder / "predictions.npz", names=np.array([f"i{k}" for k in range(40)])[order], y=y[order],
                 scores=s[seeds][:, order], extra_tests=np.array([], dtype=str))
        (folder / "metrics.json").write_text(json.dumps({"per_seed": [{"seed": k} for k in seeds]}))
        return str(folder)
    first, flipped = arm("a", [0, 1, 2], scores, np.arange(40)), np.arange(40)[::-1]
    out = study.machine_check(first, arm("b", [1, 2, 3], scores, flipped))
    assert out["seeds"] == [1, 2] and out["mean_difference"] == 0 and out["correlation"] == pytest.approx(1)
    worse = scores.copy()
    worse[:, y == 1] -= 0.8
    assert study.machine_check(first, arm("c", [0, 1], worse, flipped))["mean_difference"] < 0
    with pytest.raises(SystemExit, match="fewer than 2 seeds"):
        study.machine_check(first, arm("d", [3], scores, np.arange(40)))


def test_study_report_states_the_verdict_once_the_primary_cell_is_complete(monkeypatch, tmp_path):
    """study.py report on a finished primary cell (1 recipe, 2 generators x 2 seeds, mixing only): the pooled,
    internal and external comparisons, the verdict by the protocol's rule, the primary number and its half-width."""
    study = _study(monkeypatch)
    rng = np.random.default_rng(0)
    y, ext = np.repeat([0, 1], 30), np.repeat([0, 1], 40)
    d = study.Design("0.25", "limited", 2, 2, "1,2", "mix", 1, 10, None)
    results = tmp_path / "results"

    def arm(folder, skill, runs):
        folder = results / folder
        folder.mkdir(parents=True)
        np.savez(folder / "predictions.npz", names=np.array([f"i{k}" for k in range(60)]), y=y,
                 scores=skill * y + rng.normal(size=(runs, 60)), extra_tests=np.array(["ext.h5:test"]),
                 extra0_names=np.array([f"e{k}" for k in range(80)]), extra0_y=ext,
                 extra0_scores=skill * ext + rng.normal(size=(runs, 80)))
        (folder / "metrics.json").write_text("{}")
    for name in ("real", "real+oversampling", "real+augmentation"):
        arm(d.control_folder(0.25, name, 1.0), 1.0, 4)
    for g, folder in enumerate(d.synthetic_folders(0.25, "limited", "mix", 1.0)):
        arm(folder, 4.0, 2)  # far better than every control
    for name in ("real+oversampling", "real+augmentation"):  # the ratio sweep's cell at ratio 2
        arm(d.control_folder(0.25, name, 2.0), 1.0, 4)
    for folder in d.synthetic_folders(0.25, "limited", "mix", 2.0):
        arm(folder, 0.0, 2)  # no skill at all: worse than every control
    out = tmp_path / "bench.md"
    study.report(fractions="0.25", recipes="limited", generators=2, seeds=2, ratios="1,2", modes="mix",
                 results=str(results), out=str(out), figure_path=str(tmp_path / "fig.png"))
    text = out.read_text()
    assert "| 0.25 | 1 | 0 / 2 | 5 / 5 |" in text  # progress: no generator record, every arm finished
    assert "| 0.25 | 2 | (shared) | 5 / 5 |" in text
    ratio2 = "| 0.25 | 2 | pooled (140) | real + synthetic (limited) | real + oversampling |"
    row = next(r for r in text.splitlines() if r.startswith(ratio2))
    assert float(row.split("|")[8]) < 0  # the ratio-2 cell is compared with its own count-matched controls
    from PIL import Image
    assert Image.open(tmp_path / "fig.png").size[0] > Image.open(tmp_path / "fig.png").size[1] * 2  # two panels
    assert "**Verdict by the protocol's rule over the 1 synthetic arms: synthetic data helps**" in text
    assert "Primary number: the best synthetic arm, real + synthetic (limited)" in text and "half-width" in text
    for test in ("pooled (140)", "internal (60)", "external (80)"):
        assert f"| 0.25 | 1 | {test} | real + synthetic (limited) | real |" in text
    levels = {(r.split("|")[2].strip(), r.split("|")[3].strip()): [c.strip() for c in r.split("|")[4:8]]
              for r in text.splitlines() if r.startswith("| 0.25 |")
              and len(r.split("|")) == 9}  # the arm-level table: fraction, ratio, arm, runs, 3 AUROCs
    assert levels[("2", "real + synthetic (limited)")][0] == "4"  # 2 generators x 2 runs, together
    assert float(levels[("2", "real + synthetic (limited)")][1].split("±")[0]) < 0.65  # no skill
    assert float(levels[("1", "real + synthetic (limited)")][2].split("±")[0]) > 0.9  # skill 4, external set alone


def _fake_job(job, work, results):
    """A study job that leaves a marker, or fails when its key says so (module level: the pool pickles it)."""
    from pathlib import Path
    if "broken" in job["key"]:
        raise RuntimeError("broken on purpose")
    assert all((Path(work) / n).is_file() for n in job["needs"]), job  # its needs finished before it started
    (Path(work) / job["key"]).parent.mkdir(parents=True, exist_ok=True)
    (Path(work) / job["key"]).write_text("done")


def test_study_schedule_waits_for_needs_and_skips_what_a_failure_blocks(monkeypatch, tmp_path):
    study = _study(monkeypatch)
    jobs = [{"kind": "x", "key": k, "needs": n} for k, n in [("gen-broken", []), ("arm-a", ["gen-broken"]),
            ("gen-ok", []), ("arm-b", ["gen-ok"]), ("arm-c", [])]]
    failed = study.schedule(jobs, 2, tmp_path, tmp_path, fn=_fake_job)
    assert sorted(failed) == ["arm-a", "gen-broken"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm-b", "arm-c", "gen-ok"]


def test_study_refuses_a_retrained_generator_whose_samples_differ_from_the_recorded_ones(tmp_path, monkeypatch):
    study = _study(monkeypatch)
    samples, record = tmp_path / "samples.h5", tmp_path / "generator.json"
    samples.write_bytes(b"the samples")
    study.check_same_samples(samples, record)  # nothing recorded yet: fine
    record.write_text(json.dumps({"samples_sha256": study.sha256(samples)}))
    study.check_same_samples(samples, record)  # the same samples: fine
    samples.write_bytes(b"other samples")
    # its primary arms all finished: only secondary arms will use it, so the second version is accepted, named
    assert study.check_same_samples(samples, record, primary_done=True) == study.sha256(samples)
    with pytest.raises(SystemExit, match="differs from the samples recorded"):
        study.check_same_samples(samples, record)
    assert not samples.exists()  # so the next run does not take them for finished
