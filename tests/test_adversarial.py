"""A hostile user's sweep over every tool: damaged, inconsistent, huge and malicious input. Every case must end in
exit status 2 with one line ``error: ...`` (no traceback), leave nothing at the output path, and leave any file
that was already there untouched. Tools run in this process (python-fire and all, through ``cli.run``), so the
sweep costs no interpreter start-ups; the cases that need a real process (file-size limit, kill -9) are below it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

from cxrgan import cli, torchfile
from cxrgan.data.phantoms import generate
from cxrgan.fileio import output_lock
from conftest import ROOT, TINY_GAN, nih_rows, write_nih_tree

_TOOLS = {}


def tool(name: str):
    if name not in _TOOLS:
        spec = importlib.util.spec_from_file_location(f"adv_{name}", ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]


def run_here(name: str, *args, capsys) -> tuple[int, str]:
    """Run tools/NAME.py with ``args`` in this process; returns (exit status, stderr)."""
    argv = sys.argv
    sys.argv = [f"{name}.py", *map(str, args)]
    handler = signal.getsignal(signal.SIGTERM)
    try:
        cli.run(tool(name).main, name=f"{name}.py")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, handler)
    return code, capsys.readouterr().err


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def assert_refused(code: int, err: str, out: Path | None = None, before: str | None = None, match: str = ""):
    lines = [line for line in err.strip().splitlines() if line.strip() and "━" not in line]  # not progress bars
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match.lower() in lines[0].lower(), lines[0]
    if out is not None:
        assert digest(out) == before, f"{out} changed"
        assert not list(out.parent.glob(f".{out.name}.*.tmp")), "a temp file was left behind"


# ---------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One of each input a tool reads, trained or built for real (tiny), plus damaged variants."""
    w = tmp_path_factory.mktemp("adversarial")
    data = w / "ph32.h5"
    generate(data, n=64, size=32, seed=0)
    data64 = w / "ph64.h5"
    generate(data64, n=24, size=64, seed=0)
    from cxrgan.generative.train import GanConfig, train
    train(GanConfig(data=str(data), out=str(w / "gan"), recipe="improved", epochs=1, **TINY_GAN))
    from cxrgan.generative.sample import sample_to_file, resolve_generators
    gens = resolve_generators(str(w / "gan"), w / "gan", [0, 1], torch.device("cpu"))
    sample_to_file(w / "synthetic.h5", gens, 8, 0, torch.device("cpu"))
    from cxrgan.classify.train import ClassifierConfig, run
    run(ClassifierConfig(data=str(data), out=str(w / "clf"), epochs=1, seeds=1, size=32, n_boot=10, device="cpu"))
    return w


def damaged_copy(w: Path, name: str, edit) -> Path:
    """A checkpoint loaded, edited by ``edit(dict)`` and saved again with plain torch.save (no fresh digest)."""
    src = w / "gan" / "last.pt"
    obj = torch.load(src, weights_only=True)
    edit(obj)
    path = w / name
    torch.save(obj, path)
    return path


def h5_without(w: Path, name: str, drop: str) -> Path:
    """The dataset with one dataset or attribute deleted (the schema tag kept)."""
    path = w / name
    path.write_bytes((w / "ph32.h5").read_bytes())
    with h5py.File(path, "a") as f:
        if drop.startswith("@"):
            del f.attrs[drop[1:]]
        else:
            del f[drop]
    return path


# ------------------------------------------------------------------------------------------------ the sweep

def _cases(w: Path) -> list[tuple[str, str, list, Path | None, str]]:
    """(id, tool, args, output path, expected words in the error)."""
    nan_weights = damaged_copy(w, "nan.pt", lambda o: o["ema"].__setitem__(
        next(iter(o["ema"])), torch.full_like(next(iter(o["ema"].values())), float("nan"))))
    no_model = damaged_copy(w, "nomodel.pt", lambda o: o.pop("model"))
    size48 = damaged_copy(w, "size48.pt", lambda o: o["model"].__setitem__("size", 48))
    empty = w / "empty.pt"
    empty.write_bytes(b"")
    bad_clf = w / "clf-nan.pt"
    state = torch.load(w / "clf" / "model-seed0.pt", weights_only=True)
    state["state"]["fc.weight"] = torch.full_like(state["state"]["fc.weight"], float("inf"))
    torchfile.save(state, bad_clf)  # a fresh digest: only the finiteness check can catch it
    no_images = h5_without(w, "noimages.h5", "train/images")
    no_classes = h5_without(w, "noclasses.h5", "@classes")
    zero = w / "zero.h5"
    zero.write_bytes(b"")
    existing = w / "existing.h5"
    existing.write_bytes(b"precious")
    existing_json = w / "existing.json"
    existing_json.write_text('{"precious": true}')
    d, syn = w / "ph32.h5", w / "synthetic.h5"
    return [
        ("make_hdf5: --src missing", "make_hdf5", ["--src", w / "nope", "--out", w / "o1.h5"], w / "o1.h5",
         "not a directory"),
        ("make_hdf5: --out exists", "make_hdf5", ["--src", w, "--out", existing], existing, "already exists"),
        ("make_hdf5: --out is the csv", "make_hdf5", ["--src", w, "--csv", existing_json, "--out", existing_json,
                                                      "--overwrite"], existing_json, "input"),
        ("make_phantoms: --n -1", "make_phantoms", ["--out", w / "o2.h5", "--n", -1], w / "o2.h5", "--n"),
        ("train_dcgan: no images dataset", "train_dcgan", ["--data", no_images, "--out", w / "g1"], None, "images"),
        ("train_dcgan: no classes attribute", "train_dcgan", ["--data", no_classes, "--out", w / "g2"], None,
         "classes"),
        ("train_dcgan: 0-byte data", "train_dcgan", ["--data", zero, "--out", w / "g3"], None, "hdf5"),
        ("train_dcgan: --lr-g 1e39", "train_dcgan", ["--data", d, "--out", w / "g4", "--lr-g", "1e39"], None, "--lr-g"),
        ("train_dcgan: --out is a file", "train_dcgan", ["--data", d, "--out", existing], existing, "is a file"),
        ("train_dcgan: --beta1 2", "train_dcgan", ["--data", d, "--out", w / "g5", "--beta1", "2"], None, "--beta1"),
        ("sample: 0-byte checkpoint", "sample", ["--ckpt", empty, "--out", w / "s1.h5"], w / "s1.h5", "empty"),
        ("sample: checkpoint without model", "sample", ["--ckpt", no_model, "--out", w / "s2.h5"], w / "s2.h5",
         "modified"),
        ("sample: NaN weight written in", "sample", ["--ckpt", nan_weights, "--out", w / "s3.h5"], w / "s3.h5",
         "modified"),
        ("sample: --out exists", "sample", ["--ckpt", w / "gan", "--out", existing], existing, "already exists"),
        ("sample: --out is the checkpoint", "sample", ["--ckpt", w / "gan" / "last.pt", "--out",
                                                       w / "gan" / "last.pt", "--overwrite"], w / "gan" / "last.pt",
         "input"),
        ("sample: --n beyond the disk", "sample", ["--ckpt", w / "gan", "--out", w / "s4.h5", "--n", 10 ** 12],
         w / "s4.h5", "free"),
        ("train_resnet: --lr 1e39", "train_resnet", ["--data", d, "--out", w / "c1", "--lr", "1e39"], None, "--lr"),
        ("train_resnet: synthetic of another size", "train_resnet", ["--data", data64(w), "--out", w / "c2",
                                                                     "--synthetic", syn], None, "size"),
        ("train_resnet: --out holds results", "train_resnet", ["--data", d, "--out", w / "clf"],
         w / "clf" / "metrics.json", "earlier run"),
        ("train_resnet: --baseline is --out", "train_resnet", ["--data", d, "--out", w / "clf", "--baseline",
                                                               w / "clf", "--overwrite"], w / "clf" / "metrics.json",
         "also an input"),
        ("fid_is: generated images of another size", "fid_is", ["--real", data64(w), "--fake", syn, "--out",
                                                                 w / "f1.json"], w / "f1.json", "one size"),
        ("fid_is: classifier with infinite weights", "fid_is", ["--real", d, "--fake", syn, "--out", w / "f2.json",
                                                                "--features", f"classifier:{bad_clf}"],
         w / "f2.json", "nan or infinity"),
        ("fid_is: --out exists", "fid_is", ["--real", d, "--fake", syn, "--out", existing_json], existing_json,
         "already exists"),
        ("fid_is: size 48 generator file as data", "fid_is", ["--real", d, "--fake", size48, "--out", w / "f3.json"],
         w / "f3.json", ""),
    ]


def data64(w: Path) -> Path:
    return w / "ph64.h5"


def test_every_tool_refuses_bad_input_with_one_line_and_loses_nothing(world, capsys):
    cases = _cases(world)
    handled = 0
    for case_id, name, args, out, match in cases:
        before = digest(out) if out is not None else None
        try:
            code, err = run_here(name, *args, capsys=capsys)
        except BaseException as e:  # noqa: BLE001 - an exception escaping cli.run is the failure being tested
            pytest.fail(f"{case_id}: {type(e).__name__} escaped: {e}")
        try:
            assert_refused(code, err, out, before, match)
        except AssertionError as e:
            pytest.fail(f"{case_id}: {e}")
        handled += 1
    assert handled == len(cases) >= 20


def test_a_checkpoint_with_the_right_tag_but_wrong_shapes_is_refused(world, capsys):
    path = world / "size48-digest.pt"
    obj = torch.load(world / "gan" / "last.pt", weights_only=True)
    obj["model"]["size"] = 48
    torchfile.save(obj, path)  # a valid digest: the content itself is wrong
    code, err = run_here("sample", "--ckpt", path, "--out", world / "s5.h5", capsys=capsys)
    assert_refused(code, err, world / "s5.h5", None, "malformed content")


def test_report_refuses_truncated_or_mistyped_results(world, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    (outputs / "classify" / "real").mkdir(parents=True)
    good = json.loads((world / "clf" / "metrics.json").read_text())
    report = outputs / "REPORT.md"
    report.write_text("previous report")
    (outputs / "classify" / "real" / "metrics.json").write_text(json.dumps(good)[:200])  # cut short
    code, err = run_here("report", "--outputs", outputs, "--overwrite", capsys=capsys)
    assert_refused(code, err, report, digest(report), "truncated")
    (outputs / "classify" / "real" / "metrics.json").write_text(json.dumps({**good, "auroc": "high"}))
    code, err = run_here("report", "--outputs", outputs, "--overwrite", capsys=capsys)
    assert_refused(code, err, report, digest(report), "malformed")
    (outputs / "classify" / "real" / "metrics.json").write_text(json.dumps(good))
    code, err = run_here("report", "--outputs", outputs, capsys=capsys)
    assert_refused(code, err, report, digest(report), "already exists")
    code, err = run_here("report", "--outputs", outputs, "--overwrite", capsys=capsys)
    assert code == 0 and "previous report" not in report.read_text()


# ------------------------------------------------------------------------------- classes needing a real process

def test_disk_full_midway_is_one_line_and_leaves_nothing(tmp_path):
    """A file-size limit makes every write past 64 KB fail (EFBIG), as a full disk would (ENOSPC)."""
    rows = nih_rows(30)
    src = write_nih_tree(tmp_path / "nih", rows, size=64)
    out = tmp_path / "out.h5"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_hdf5.py"), "--src", src, "--out", out, "--size",
                        "64", "--workers", "0"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       preexec_fn=limit)
    assert_refused(r.returncode, r.stderr, out, None, "")
    assert not out.exists()


def test_a_second_run_writing_the_same_output_is_refused(world, capsys):
    out = world / "locked.h5"
    with output_lock(out):  # another run is writing it
        code, err = run_here("make_phantoms", "--out", out, "--n", 40, "--size", 32, capsys=capsys)
    assert_refused(code, err, out, None, "another run is writing")
    code, err = run_here("make_phantoms", "--out", out, "--n", 40, "--size", 32, capsys=capsys)
    assert code == 0 and out.is_file() and not (world / f".{out.name}.lock").exists()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    out = tmp_path / "x.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from cxrgan.fileio import output_lock; l = output_lock(sys.argv[2]); l.__enter__();"
                               "print('held', flush=True); time.sleep(60)", str(ROOT / "lib"), str(out)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from cxrgan.errors import UserError
    with pytest.raises(UserError, match="another run"):
        with output_lock(out):
            pass
    holder.kill()
    holder.wait()
    with output_lock(out):  # the kernel released the dead holder's lock
        pass


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_decoding_workers_exit_when_make_hdf5_is_killed(tmp_path):
    rows = nih_rows(60)
    src = write_nih_tree(tmp_path / "nih", rows, size=256)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "make_hdf5.py"), "--src", src, "--out",
                             tmp_path / "o.h5", "--size", "32", "--workers", "2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 60, []
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.02)
    if len(workers) < 2:
        proc.wait()
        pytest.skip("the run finished before its workers could be seen")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() and _state(w) != "Z" for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and _state(w) != "Z"], "workers outlived make_hdf5"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# ---- kill -9 at an injected moment
# Each tool is killed (SIGKILL, from inside: lib/cxrgan/faults.py) at a named point mid-run while a good output from
# an earlier run sits at --out; that output must come through byte for byte, nothing readable may be half-written,
# and the same command run again must finish the work and clean up after the dead run.

def run_killed_at(point: str | None, name: str, *args) -> subprocess.CompletedProcess:
    """tools/NAME.py as a real process, killed at ``point`` (None: run to the end)."""
    from cxrgan.faults import KILL_AT

    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if point is not None:
        env[KILL_AT] = point
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def files_of(folder: Path) -> dict[str, str]:
    """Name -> sha256 of the visible files in ``folder`` (temp and lock files start with a dot)."""
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_killed_keeping(r: subprocess.CompletedProcess, folder: Path, before: dict[str, str]) -> None:
    """Died by SIGKILL; the visible files are exactly the earlier run's; only temp and lock files were added."""
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert files_of(folder) == before
    assert all(n.endswith((".tmp", ".lock")) for n in leftovers(folder)), leftovers(folder)


def assert_finished_clean(r: subprocess.CompletedProcess, folder: Path) -> None:
    assert r.returncode == 0, r.stderr
    assert leftovers(folder) == [], "the dead run's temp or lock files were left"


def assert_unreadable(path: Path) -> None:
    """A dead run's temp file is never taken for a dataset."""
    from cxrgan.data.datasetfile import open_h5
    from cxrgan.data.reader import SAMPLES_SCHEMA, SCHEMA
    from cxrgan.errors import UserError

    with pytest.raises(UserError):
        open_h5(path, (SCHEMA, SAMPLES_SCHEMA)).close()


CLASSIFIER = ["--epochs", 1, "--seeds", 2, "--size", 32, "--batch", 16, "--n-boot", 10, "--device", "cpu"]


@pytest.mark.parametrize("point", ["train_resnet:seed1-epoch1-step1", "train_resnet:wrote-model-seed0.pt",
                                   "train_resnet:before-publish"])
def test_train_resnet_killed_keeps_the_earlier_run_and_redoes(world, tmp_path, point):
    import shutil
    from cxrgan.classify.model import load as load_classifier

    out = tmp_path / "runs" / "clf"
    shutil.copytree(world / "clf", out)  # an earlier run's complete results (one seed)
    before = files_of(out)
    args = ["--data", world / "ph32.h5", "--out", out, "--overwrite", *CLASSIFIER]
    assert_killed_keeping(run_killed_at(point, "train_resnet", *args), out, before)
    r = run_killed_at(None, "train_resnet", *args)
    assert_finished_clean(r, out)
    assert leftovers(out.parent) == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_seeds"] == 2 and [s["seed"] for s in metrics["per_seed"]] == [0, 1]
    assert sorted(files_of(out)) == ["metrics.json", "metrics.md", "model-seed0.pt", "model-seed1.pt",
                                     "predictions.npz"]
    for seed in (0, 1):
        assert load_classifier(out / f"model-seed{seed}.pt")[1]["seed"] == seed


def test_train_resnet_killed_on_its_first_run_leaves_no_finished_looking_folder(world, tmp_path):
    out = tmp_path / "clf"
    args = ["--data", world / "ph32.h5", "--out", out, *CLASSIFIER]
    r = run_killed_at("train_resnet:before-publish", "train_resnet", *args)  # every file written, none published
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (out / "metrics.json").exists() and files_of(out) == {}
    assert_finished_clean(run_killed_at(None, "train_resnet", *args), out)  # no --overwrite needed: nothing finished
    assert json.loads((out / "metrics.json").read_text())["n_seeds"] == 2


@pytest.mark.parametrize("point", ["sample:wrote-batch-3"])
def test_sample_killed_keeps_the_earlier_file_and_redoes(world, tmp_path, point):
    out = tmp_path / "synthetic.h5"
    out.write_bytes((world / "synthetic.h5").read_bytes())
    before = files_of(tmp_path)
    args = ["--ckpt", world / "gan", "--out", out, "--n", 8, "--batch", 4, "--device", "cpu", "--overwrite"]
    assert_killed_keeping(run_killed_at(point, "sample", *args), tmp_path, before)
    temps = list(tmp_path.glob(f".{out.name}.*.tmp"))
    assert len(temps) == 1
    assert_unreadable(temps[0])
    assert_finished_clean(run_killed_at(None, "sample", *args), tmp_path)
    with h5py.File(out, "r") as f:
        assert f["synthetic/images"].shape[0] == 16 and f.attrs["n_per_class"] == 8


@pytest.fixture(scope="module")
def nih_src(tmp_path_factory):
    return write_nih_tree(tmp_path_factory.mktemp("kill-src") / "nih", nih_rows(12), size=32)


@pytest.mark.parametrize("point", ["make_hdf5:added-image-3", "make_hdf5:before-rename"])
def test_make_hdf5_killed_keeps_the_earlier_file_and_redoes(nih_src, tmp_path, point):
    out = tmp_path / "nih.h5"
    args = ["--src", nih_src, "--out", out, "--size", 32, "--workers", 0, "--overwrite", "--seed"]
    assert run_killed_at(None, "make_hdf5", *args, 1).returncode == 0  # the earlier good file (and its report)
    before = files_of(tmp_path)
    assert_killed_keeping(run_killed_at(point, "make_hdf5", *args, 0), tmp_path, before)
    if point != "make_hdf5:before-rename":  # there the temp file is complete; at any earlier point, unreadable
        assert_unreadable(next(tmp_path.glob(f".{out.name}.*.tmp")))
    assert_finished_clean(run_killed_at(None, "make_hdf5", *args, 0), tmp_path)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["args"])["seed"] == 0
        assert json.loads(f.attrs["counts"]) == json.loads((tmp_path / "nih.report.json").read_text())["counts"]


def fid_args(w: Path, out: Path) -> list:
    return ["--real", w / "ph32.h5", "--fake", w / "synthetic.h5", "--out", out, "--features",
            f"classifier:{w / 'clf' / 'model-seed0.pt'}", "--cache", "", "--kid-subset-size", 8, "--kid-subsets", 5,
            "--device", "cpu"]


@pytest.mark.parametrize("point", ["fid_is:features-computed", "fid_is:before-writing"])
def test_fid_is_killed_keeps_the_earlier_results_and_redoes(world, tmp_path, point, capsys):
    out = tmp_path / "fid_is.json"
    code, err = run_here("fid_is", *fid_args(world, out), "--seed", 1, capsys=capsys)
    assert code == 0, err
    before = files_of(tmp_path)  # the json and its four audit figures
    assert len(before) == 5
    args = [*fid_args(world, out), "--overwrite"]
    assert_killed_keeping(run_killed_at(point, "fid_is", *args), tmp_path, before)
    assert_finished_clean(run_killed_at(None, "fid_is", *args), tmp_path)
    result = json.loads(out.read_text())
    assert result["config"]["seed"] == 0 and result["fid"] is not None
    assert sorted(files_of(tmp_path)) == sorted(before) and set(result["figures"].values()) < set(before)


# two runs at once

@pytest.mark.parametrize("name", ["train_dcgan", "train_resnet"])
def test_a_second_training_run_on_the_same_out_is_refused_at_once(world, tmp_path, name, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(world / ("gan" if name == "train_dcgan" else "clf"), out)
    before = files_of(out)
    args = (["--recipe", "improved", "--epochs", 2, *[x for k, v in TINY_GAN.items() for x in (f"--{k}", v)]]
            if name == "train_dcgan" else CLASSIFIER)
    with output_lock(out):  # the first run, still training
        started = time.monotonic()
        code, err = run_here(name, "--data", world / "ph32.h5", "--out", out, "--overwrite", *args, capsys=capsys)
    assert_refused(code, err, match="another run is writing")
    assert time.monotonic() - started < 30 and files_of(out) == before


def test_fid_is_refuses_a_samples_file_that_sample_is_writing(world, tmp_path, capsys):
    """sample holds the output lock of its file for its whole run and renames the new file in only at the end; a
    reader started meanwhile is refused instead of measuring the file that is about to be replaced."""
    fake = tmp_path / "synthetic.h5"
    fake.write_bytes((world / "synthetic.h5").read_bytes())
    out = tmp_path / "fid.json"
    args = fid_args(world, out)
    args[args.index("--fake") + 1] = fake
    with output_lock(fake):  # sample, mid-run
        code, err = run_here("fid_is", *args, capsys=capsys)
        assert_refused(code, err, out, None, "another run is writing")
        code, err = run_here("train_resnet", "--data", world / "ph32.h5", "--synthetic", fake, "--out",
                             tmp_path / "clf", *CLASSIFIER, capsys=capsys)
        assert_refused(code, err, None, None, "another run is writing")
    code, err = run_here("fid_is", *args, capsys=capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["fake"]["content_sha256"] == h5py.File(fake, "r").attrs["content_sha256"]


def test_a_samples_file_replaced_while_being_read_is_refused_never_mixed(world, tmp_path):
    """A reader that opened the old file keeps reading it (a rename leaves its handle on the old file); one that
    opens the path again after the replacement is refused, never reading new images under the old labels."""
    from cxrgan.data.reader import H5ImageDataset
    from cxrgan.errors import UserError
    from cxrgan.generative.sample import resolve_generators, sample_to_file

    path, newer = tmp_path / "synthetic.h5", tmp_path / "newer.h5"
    path.write_bytes((world / "synthetic.h5").read_bytes())
    sample_to_file(newer, resolve_generators(str(world / "gan"), world / "gan", [0, 1], torch.device("cpu")), 8, 1,
                   torch.device("cpu"))
    reading, waiting = H5ImageDataset(path, "synthetic"), H5ImageDataset(path, "synthetic")
    old = reading.read_uint8(range(len(reading)))
    os.replace(newer, path)  # what sample's last step does
    assert (reading.read_uint8(range(len(reading))) == old).all()
    with pytest.raises(UserError, match="replaced by another run"):
        waiting.read_uint8([0])
