"""A hostile user's sweep over every tool: damaged, inconsistent, huge and malicious input. Every case must end in
exit status 2 with one line ``error: ...`` (no traceback), leave nothing at the output path, and leave any file
that was already there untouched. Tools run in this process (python-fire and all, through ``cli.run``), so the
sweep costs no interpreter start-ups; the cases that need a real process (file-size limit, kill -9) are below it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
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


# ------------------------------------------------------------------ datasets whose meaning is wrong, seeds out of range

def edited_h5(w: Path, name: str, edit) -> Path:
    """A copy of the 32x32 phantom dataset changed by ``edit(h5py.File)`` (the schema tag kept)."""
    path = w / name
    path.write_bytes((w / "ph32.h5").read_bytes())
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _replace(f, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


def _three_classes(f) -> None:
    f.attrs["classes"] = np.asarray(["No Finding", "Infiltration", "Effusion"], dtype=h5py.string_dtype())
    for split in ("train", "val", "test"):
        f[f"{split}/labels"][0] = 2


def _test_patient_in_train(f) -> None:
    f["test/patient_ids"][0] = f["train/patient_ids"][0]


def _train_only_class_0(f) -> None:
    _replace(f, "train/labels", np.zeros(len(f["train/labels"]), np.int64))


def _empty_test(f) -> None:
    size = int(f.attrs["size"])
    for name, data in (("images", np.zeros((0, size, size), np.uint8)), ("labels", np.zeros(0, np.int64)),
                       ("names", np.asarray([], dtype=object)), ("patient_ids", np.zeros(0, np.int64))):
        del f[f"test/{name}"]
        f.create_dataset(f"test/{name}", data=data, dtype=h5py.string_dtype() if name == "names" else None)


def _huge_uint64_label(f) -> None:
    labels = f["train/labels"][:].astype(np.uint64)
    labels[0] = 2**63 + 5
    _replace(f, "train/labels", labels)


def _meaning_cases(w: Path) -> list[tuple[str, str, list, Path | None, str]]:
    d = w / "ph32.h5"
    three = edited_h5(w, "three.h5", _three_classes)
    shared = edited_h5(w, "shared-patient.h5", _test_patient_in_train)
    one_class = edited_h5(w, "one-class.h5", _train_only_class_0)
    int_classes = edited_h5(w, "int-classes.h5", lambda f: f.attrs.__setitem__("classes", np.asarray([0, 1])))
    empty_test = edited_h5(w, "empty-test.h5", _empty_test)
    huge = edited_h5(w, "huge-label.h5", _huge_uint64_label)
    other_patients = w / "ph32-s1.h5"  # phantom patient ids count from 1 in every file: the same ids, other images
    if not other_patients.exists():
        generate(other_patients, n=64, size=32, seed=1)
    clf = ["--epochs", 1, "--size", 32, "--n-boot", 10, "--device", "cpu"]
    return [
        ("train_resnet: three classes", "train_resnet", ["--data", three, "--out", w / "m1", *clf], None, "binary"),
        ("train_resnet: a test patient in train", "train_resnet", ["--data", shared, "--out", w / "m2", *clf], None,
         "patient"),
        ("train_dcgan: a test patient in train", "train_dcgan", ["--data", shared, "--out", w / "m3"], None,
         "patient"),
        ("fid_is: a test patient in train", "fid_is", ["--real", shared, "--fake", w / "synthetic.h5", "--out",
                                                       w / "m4.json"], w / "m4.json", "patient"),
        ("train_resnet: --test of patients seen in training", "train_resnet",
         ["--data", d, "--test", f"{other_patients}:test", "--out", w / "m5", *clf], None, "patient"),
        ("fid_is: --train of the --real patients", "fid_is",
         ["--real", d, "--train", f"{other_patients}:train", "--fake", w / "synthetic.h5", "--out", w / "m6.json"],
         w / "m6.json", "patient"),
        ("train_resnet: training split of one class", "train_resnet", ["--data", one_class, "--out", w / "m7", *clf],
         None, "only 'no finding'"),
        ("train_resnet: integer classes", "train_resnet", ["--data", int_classes, "--out", w / "m8", *clf], None,
         "class name"),
        ("train_dcgan: integer classes", "train_dcgan", ["--data", int_classes, "--out", w / "m9"], None,
         "class name"),
        ("train_resnet: empty test split", "train_resnet", ["--data", empty_test, "--out", w / "m10", *clf], None,
         "holds no images"),
        ("train_resnet: uint64 label 2^63+5", "train_resnet", ["--data", huge, "--out", w / "m11", *clf], None,
         str(2**63 + 5)),
        ("train_resnet: --size 1", "train_resnet", ["--data", d, "--out", w / "m12", "--size", 1], None, "--size"),
        ("fid_is: --k beyond the images", "fid_is", ["--real", d, "--fake", w / "synthetic.h5", "--out",
                                                      w / "m13.json", "--k", 1000], w / "m13.json", "--k 1000"),
        ("train_dcgan: --seed 2^64", "train_dcgan", ["--data", d, "--out", w / "m14", "--seed", 2**64], None,
         "--seed"),
        ("sample: --seed 2^70", "sample", ["--ckpt", w / "gan", "--out", w / "m15.h5", "--seed", 2**70],
         w / "m15.h5", "--seed"),
        ("train_resnet: --seed -1", "train_resnet", ["--data", d, "--out", w / "m16", "--seed", -1], None, "--seed"),
        ("train_resnet: --subset-seed 2^40", "train_resnet", ["--data", d, "--out", w / "m17", "--subset-seed",
                                                              2**40], None, "--subset-seed"),
        ("fid_is: --seed -5", "fid_is", ["--real", d, "--fake", w / "synthetic.h5", "--out", w / "m18.json",
                                         "--seed", -5], w / "m18.json", "--seed"),
        ("make_phantoms: --seed 2^33", "make_phantoms", ["--out", w / "m19.h5", "--seed", 2**33], w / "m19.h5",
         "--seed"),
        ("make_hdf5: --seed -1", "make_hdf5", ["--src", w, "--out", w / "m20.h5", "--seed", -1], w / "m20.h5",
         "--seed"),
        ("report: --seed -1", "report", ["--outputs", w, "--out", w / "m21.md", "--seed", -1], w / "m21.md",
         "--seed"),
    ]


def test_datasets_whose_meaning_is_wrong_and_seeds_out_of_range_are_refused(world, capsys):
    for case_id, name, args, out, match in _meaning_cases(world):
        before = digest(out) if out is not None else None
        try:
            code, err = run_here(name, *args, capsys=capsys)
            assert_refused(code, err, out, before, match)
        except AssertionError as e:
            pytest.fail(f"{case_id}: {e}")
        except BaseException as e:  # noqa: BLE001 - an exception escaping cli.run is the failure being tested
            pytest.fail(f"{case_id}: {type(e).__name__} escaped: {e}")


def test_the_largest_seed_is_accepted(world, capsys):
    out = world / "seedmax.h5"
    code, err = run_here("sample", "--ckpt", world / "gan", "--out", out, "--n", 4, "--seed", 2**32 - 1, capsys=capsys)
    assert code == 0, err
    assert out.is_file()


# ------------------------------------------------------------ every checkpoint kind, given where it does not belong

@pytest.fixture(scope="module")
def checkpoints(world):
    """One file of each checkpoint kind a tool reads, plus a truncated and an edited copy of each."""
    w = world
    from cxrgan.generative.train import GanConfig, train
    from cxrgan.metrics.inception import random_weights
    train(GanConfig(data=str(w / "ph32.h5"), out=str(w / "diff"), recipe="diffusion", epochs=1, **TINY_GAN))
    kinds = {"gan": w / "gan" / "last.pt", "diffusion": w / "diff" / "last.pt",
             "classifier": w / "clf" / "model-seed0.pt"}
    kinds["imagenet"] = w / "imagenet.pt"  # torchvision's layout (3-channel conv1), random weights
    torch.save(__import__("torchvision").models.resnet18().state_dict(), kinds["imagenet"])
    kinds["inception"] = w / "inception.pt"
    torch.save(random_weights(0), kinds["inception"])
    for kind, path in list(kinds.items()):
        cut = w / f"{kind}-cut.pt"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        obj = torch.load(path, weights_only=True)
        state = _tensors_of(obj)
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name].clone().fill_(0.5) if kind in ("gan", "diffusion", "classifier") \
            else torch.full_like(state[name], float("nan"))  # digest-carrying kinds: any edit; the others: NaN
        torch.save(obj, w / f"{kind}-edited.pt")
        kinds[f"{kind}-cut"], kinds[f"{kind}-edited"] = cut, w / f"{kind}-edited.pt"
    return kinds


def _tensors_of(obj: dict) -> dict:
    """The state dict inside a checkpoint of any kind (the file's own dict for plain weights files)."""
    for key in ("ema", "state"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _checkpoint_cases(w: Path, k: dict) -> list[tuple[str, str, list, Path | None, str]]:
    d, syn = w / "ph32.h5", w / "synthetic.h5"
    fid = ["--real", d, "--fake", syn, "--features"]
    clf = ["--data", d, "--size", 32, "--epochs", 1, "--n-boot", 10, "--device", "cpu", "--pretrained"]
    cases = [
        ("sample: --truncation for a diffusion model", "sample", ["--ckpt", k["diffusion"], "--truncation", 1.5],
         "--truncation does not apply"),
        ("sample: --steps for a GAN", "sample", ["--ckpt", k["gan"], "--steps", 3], "--steps does not apply"),
        ("sample: --guidance for a GAN", "sample", ["--ckpt", k["gan"], "--guidance", 2], "--guidance does not apply"),
        ("sample: --solver for a GAN", "sample", ["--ckpt", k["gan"], "--solver", "heun"], "--solver does not apply"),
        ("sample: a classifier checkpoint", "sample", ["--ckpt", k["classifier"]], "not a cxrgan generative"),
        ("sample: ImageNet weights", "sample", ["--ckpt", k["imagenet"]], "not a cxrgan generative"),
        ("fid_is: a GAN as the classifier", "fid_is", [*fid, f"classifier:{k['gan']}"], "not a train_resnet"),
        ("fid_is: a diffusion model as the classifier", "fid_is", [*fid, f"classifier:{k['diffusion']}"],
         "not a train_resnet"),
        ("fid_is: a GAN as Inception weights", "fid_is", [*fid, "inception", "--inception-weights", k["gan"]],
         "not the fid inception"),
        ("fid_is: ImageNet ResNet as Inception weights", "fid_is",
         [*fid, "inception", "--inception-weights", k["imagenet"]], "not the fid inception"),
        ("train_resnet: a GAN as ImageNet weights", "train_resnet", [*clf, "--weights", k["gan"]], "not a torchvision"),
        ("train_resnet: a classifier as ImageNet weights", "train_resnet", [*clf, "--weights", k["classifier"]],
         "not a torchvision"),
        ("train_dcgan: a diffusion model as snapshot features", "train_dcgan",
         ["--data", d, "--snapshot-kimg", 0.01, "--snapshot-features", f"classifier:{k['diffusion']}"],
         "not a train_resnet"),
    ]
    readers = {"gan": ("sample", ["--ckpt"]), "diffusion": ("sample", ["--ckpt"]),
               "classifier": ("fid_is", [*fid, "classifier:"]), "imagenet": ("train_resnet", [*clf, "--weights"]),
               "inception": ("fid_is", [*fid, "inception", "--inception-weights"])}
    expected = {"cut": "damaged", "edited": "modified"}
    for kind, (tool_name, flag) in readers.items():
        for damage in ("cut", "edited"):
            path = k[f"{kind}-{damage}"]
            args = [*flag[:-1], f"{flag[-1]}{path}"] if flag[-1].endswith(":") else [*flag, path]
            words = expected[damage] if kind in ("gan", "diffusion", "classifier") or damage == "cut" else "nan"
            cases.append((f"{tool_name}: {damage} {kind} file", tool_name, args, words))
    return cases


def test_every_checkpoint_kind_out_of_place_truncated_or_edited_is_refused(world, checkpoints, capsys):
    for i, (case_id, name, args, match) in enumerate(_checkpoint_cases(world, checkpoints)):
        out = world / f"ck{i}" if name in ("train_resnet", "train_dcgan") else \
            world / (f"ck{i}.json" if name == "fid_is" else f"ck{i}.h5")
        try:
            code, err = run_here(name, *args, "--out", out, capsys=capsys)
            assert_refused(code, err, None if out.suffix == "" else out, None, match)
        except AssertionError as e:
            pytest.fail(f"{case_id}: {e}")
        except BaseException as e:  # noqa: BLE001 - an exception escaping cli.run is the failure being tested
            pytest.fail(f"{case_id}: {type(e).__name__} escaped: {e}")


def test_resuming_with_another_recipe_or_other_data_is_refused(world, checkpoints, capsys):
    other = world / "ph32-s1.h5"
    if not other.exists():
        generate(other, n=64, size=32, seed=1)
    cases = [("train_dcgan", ["--data", world / "ph32.h5", "--out", world / "diff", "--recipe", "limited"], "recipe"),
             ("train_dcgan", ["--data", world / "ph32.h5", "--out", world / "gan", "--recipe", "diffusion"], "recipe"),
             ("train_diffusion", ["--data", world / "ph32.h5", "--out", world / "gan"], "recipe"),
             ("train_dcgan", ["--data", other, "--out", world / "gan", "--recipe", "improved", "--batch", 8,
                              "--base", 8], "data")]
    for name, args, match in cases:
        before = digest(Path(args[3]) / "last.pt")
        code, err = run_here(name, *args, "--epochs", 2, "--device", "cpu", capsys=capsys)
        assert_refused(code, err, Path(args[3]) / "last.pt", before, match)


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


# ---- Make

MAKE_TINY = ["DATA=phantom", "SIZE=32", "N_PHANTOMS=60", "EPOCHS=1", "N_SYNTH=64", "SEEDS=2", "CLF_EPOCHS=1",
             "CONTROLS=oversample", "DEVICE=cpu", "GAN_ARGS=--base 8 --batch 16 --grid 4", "STAMP=",
             f"PY={sys.executable}"]  # STAMP empty: this environment is set up already, never reinstalled


def run_make(tmp_path: Path, *args: str, wait: bool = True):
    """make in the project root on tiny phantoms under tmp_path; ``args`` come last, so they override MAKE_TINY."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CXRGAN_MAKE_LOCK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "lib"), env.get("PYTHONPATH")]))
    cmd = ["make", "--no-print-directory", f"OUTPUTS={tmp_path / 'outputs'}", f"DATA_DIR={tmp_path / 'data'}",
           *MAKE_TINY, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def assert_make_refused(r, match: str) -> None:
    """A non-zero exit and one line that says what to do: the last one (before make's own ``*** [target] Error``
    trailer; what stages finished before it printed may precede it), the only error line."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not re.match(r"make(\[\d+])?: \*\*\* \[", line)]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert [line for line in lines if "error: " in line] == lines[-1:], r.stderr
    assert match.lower() in lines[-1].lower(), r.stderr


@pytest.mark.parametrize("bad,match", [
    (["SEEDS=0"], "SEEDS='0' is not a whole number >= 1"), (["N_SYNTH=0"], "N_SYNTH='0' is not a whole number"),
    (["RECIPE=unknown"], "RECIPE must be one of"), (["KIMG=abc"], "KIMG='abc' is not a positive number"),
    (["FRACTIONS=0 1"], "FRACTIONS='0 1'"), (["XRV=yes"], "XRV='yes' must be 0 or 1"),
    (["DATA=nih", "NIH_DIR={nih}"], "run `make download NIH_DIR="),
], ids=["SEEDS=0", "N_SYNTH=0", "RECIPE=unknown", "KIMG=abc", "FRACTIONS=0", "XRV=yes", "DATA=nih-empty-NIH_DIR"])
def test_make_all_with_a_bad_variable_is_refused_before_any_work(tmp_path, bad, match):
    (tmp_path / "nih").mkdir()  # an empty NIH_DIR
    r = run_make(tmp_path, "all", *(b.format(nih=tmp_path / "nih") for b in bad))
    assert_make_refused(r, match)
    assert len(r.stderr.strip().splitlines()) == 1  # and nothing ran before it
    assert r.stdout == "" and not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


def test_make_all_with_too_few_synthetic_images_stops_before_any_training(tmp_path):
    """N_SYNTH=1 per class cannot fill the synthetic arm (SYNTH_RATIO=1: as many as the real images of a class):
    known once the dataset is built, refused before the GAN or a classifier trains."""
    r = run_make(tmp_path, "all", "N_SYNTH=1")
    assert_make_refused(r, "N_SYNTH=1 images per class is fewer than the synthetic arm adds")
    assert "make_phantoms" in r.stdout and not re.search("train_|sample.py|fid_is|report.py", r.stdout)
    assert not (tmp_path / "outputs" / "gan").exists() and not (tmp_path / "outputs" / "classify").exists()


def test_make_all_with_one_seed_plans_every_stage(tmp_path):
    """SEEDS=1 is allowed: the pipeline runs, and the report's verdict says it holds for those trained models only
    (test_a_one_seed_verdict_claims_nothing_across_seeds)."""
    r = run_make(tmp_path, "-n", "all", "SEEDS=1")
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"train_resnet\.py .*--seeds 1 ", r.stdout)) == 3 and "report.py" in r.stdout


def _hold_make_lock(outputs: Path):
    """OUTPUTS/.make.lock held by this process, as a running make's lock holder holds it."""
    outputs.mkdir(parents=True, exist_ok=True)
    f = open(outputs / ".make.lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(str(os.getpid()))
    f.flush()
    return f


def test_a_second_make_in_the_same_outputs_is_refused_at_once(tmp_path):
    outputs = tmp_path / "outputs"
    with _hold_make_lock(outputs):
        r = run_make(tmp_path, "all")
    assert_make_refused(r, f"another make (pid {os.getpid()}) is running in {outputs}")
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == "" and not (tmp_path / "data").exists()
    assert [p.name for p in outputs.iterdir()] == [".make.lock"]  # not a stamp written
    r = run_make(tmp_path, "data")  # the lock released: the next make runs
    assert r.returncode == 0, r.stderr
    r = run_make(tmp_path, "data")  # and the lock of that make ended with it
    assert r.returncode == 0 and "Nothing to be done" in r.stdout, r.stderr


def test_two_real_makes_at_once_one_completes_one_is_refused(tmp_path):
    first = run_make(tmp_path, "data", "N_PHANTOMS=400", wait=False)
    lock, deadline = tmp_path / "outputs" / ".make.lock", time.time() + 60
    while first.poll() is None and time.time() < deadline and not (lock.is_file() and lock.read_text().strip()):
        time.sleep(0.01)
    second = run_make(tmp_path, "data", "N_PHANTOMS=400")
    out, err = first.communicate(timeout=300)
    if "another make" not in second.stderr:
        pytest.skip("the first make ended before the second started")
    assert_make_refused(second, "another make")
    assert first.returncode == 0, err
    with h5py.File(tmp_path / "data" / "phantom-32.h5") as f:
        assert sum(len(f[s]["labels"]) for s in ("train", "val", "test")) == 400  # the first run's, complete


def _half_finished(world: Path, root: Path, *stages: str) -> Path:
    """An outputs folder holding the named stages' results of ``world`` as `make all` lays them out."""
    import shutil
    if "gan" in stages:
        shutil.copytree(world / "gan", root / "gan" / "improved")
    if "samples" in stages:
        shutil.copy2(world / "synthetic.h5", root / "synthetic-improved.h5")
    if "real" in stages:
        shutil.copytree(world / "clf", root / "classify" / "real")
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_report_of_a_half_finished_outputs_folder_says_what_is_missing(world, tmp_path, capsys):
    root = _half_finished(world, tmp_path / "outputs", "gan")  # the GAN trained, nothing after it
    code, err = run_here("report", "--outputs", root, capsys=capsys)
    text = (root / "REPORT.md").read_text()
    assert code == 0, err
    assert "Partial report: 4 stage(s) not run yet" in text and "## Not run yet" in text
    for line in ("samples of improved (`make samples RECIPE=improved`)", "the real-data classifier (`make classify`)",
                 "the synthetic arm of improved (`make classify RECIPE=improved`)", "image metrics of improved"):
        assert f"- {line}" in text, line
    root = _half_finished(world, tmp_path / "outputs2", "gan", "samples", "real")  # one arm of three, no metrics
    (root / "classify" / "real+oversample").mkdir()
    (root / "classify" / "real+oversample" / "model-seed0.pt").write_bytes(b"interrupted")
    (root / "gan" / "limited").mkdir()
    (root / "gan" / "limited" / "last.pt").write_bytes(b"interrupted")
    code, err = run_here("report", "--outputs", root, capsys=capsys)
    text = (root / "REPORT.md").read_text()
    assert code == 0, err
    for line in ("GAN run `gan/limited`: not finished (`make gan` resumes it)",
                 "classifier `classify/real+oversample`: started, no metrics.json",
                 "the synthetic arm of improved", "image metrics of improved (`make metrics RECIPE=improved`)"):
        assert f"- {line}" in text, line
    assert "samples of" not in text and "real-data classifier" not in text and "**real" not in text  # no verdict


def test_a_one_seed_verdict_claims_nothing_across_seeds(world, tmp_path, capsys):
    """`make all SEEDS=1`'s report: every stage done, one classifier run per arm; the verdict is about those
    trained models only, and the report is not partial."""
    root = _half_finished(world, tmp_path / "outputs", "gan", "samples", "real")
    code, err = run_here("train_resnet", "--data", world / "ph32.h5", "--out", root / "classify" / "real+synthetic",
                         "--synthetic", root / "synthetic-improved.h5", "--synthetic-per-class", 8, "--baseline",
                         root / "classify" / "real", "--epochs", 1, "--seeds", 1, "--size", 32, "--n-boot", 10,
                         "--device", "cpu", capsys=capsys)
    assert code == 0, err
    code, err = run_here("fid_is", "--real", world / "ph32.h5", "--fake", root / "synthetic-improved.h5", "--out",
                         root / "metrics" / "domain-improved.json", "--features",
                         f"classifier:{root / 'classify' / 'real' / 'model-seed0.pt'}", "--cache", "",
                         "--device", "cpu", capsys=capsys)
    assert code == 0, err
    code, err = run_here("report", "--outputs", root, capsys=capsys)
    text = (root / "REPORT.md").read_text()
    assert code == 0, err
    assert "use SEEDS ≥ 2 for a verdict about the method" in text and "**real+synthetic** vs real" in text
    assert "Not run yet" not in text and "Partial report" not in text


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
