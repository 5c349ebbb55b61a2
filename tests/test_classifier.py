"""train_resnet on tiny phantoms: learning, the no-leak rule, reproducibility, TSTR, pairing, weights loading."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from cxrgan.classify import model as classifier, stats
from cxrgan.classify.arms import ARMS
from cxrgan.classify.train import ClassifierConfig, _synthetic_subset, control_copies, run
from cxrgan.data.datasetfile import SAMPLES_SCHEMA, DatasetWriter, read_info
from cxrgan.errors import UserError
from cxrgan.data.phantoms import generate
from cxrgan.data.reader import H5ImageDataset
from conftest import load_tool, run_tool

FAST = dict(size=32, device="cpu", n_boot=100, lr=1e-3)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "ph.h5"
    generate(path, n=240, size=32, seed=1)
    return path


def _samples(path, images, labels, names, trained_on=None, split="train"):
    """A samples file whose generator says it was trained on ``trained_on``'s ``split`` (no claim when None)."""
    w = DatasetWriter(path, images.shape[-1], ["No Finding", "Infiltration"], {"synthetic": len(images)},
                      with_patients=False, schema=SAMPLES_SCHEMA)
    w.add_batch("synthetic", labels, names, images)
    provenance = {} if trained_on is None else {"training_data": [
        {"content_sha256": read_info(trained_on).attrs["content_sha256"], "split": split, "path": str(trained_on)}]}
    w.close(source="test", **provenance)
    return path


@pytest.fixture(scope="module")
def fake_samples(phantoms, tmp_path_factory):
    """Stand-in synthetic images: training phantoms with a little noise, under synthetic names."""
    train = H5ImageDataset(phantoms, "train", in_memory=True)
    noisy = np.clip(train.images.astype(int) + np.random.default_rng(0).integers(-8, 9, train.images.shape), 0, 255)
    names = [f"synthetic_{i:06d}.png" for i in range(len(train))]
    return _samples(tmp_path_factory.mktemp("syn") / "s.h5", noisy.astype(np.uint8), train.labels, names, phantoms)


def test_learns_above_chance_and_writes_everything(phantoms, tmp_path):
    s = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path), epochs=6, **FAST))
    assert s["auroc"] > 0.7 and s["n_test"] == len(H5ImageDataset(phantoms, "test"))
    lo, hi = s["auroc_ci95"]
    assert lo <= s["auroc"] <= hi
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk) >= {"accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity", "per_seed",
                            "n_test", "auroc_ci95"}
    saved = torch.load(tmp_path / "model-seed0.pt", weights_only=True)
    assert saved["format"] == "cxrgan-classifier/1" and "fc.weight" in saved["state"]
    assert (tmp_path / "metrics.md").read_text().startswith("# Classifier results")


def test_same_seed_same_numbers(phantoms, tmp_path):
    a = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "a"), epochs=2, seeds=2, **FAST))
    b = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "b"), epochs=2, seeds=2, **FAST))
    for key in ("auroc", "auroc_ci95", "accuracy_ci95", "specificity_sd"):
        assert a[key] == b[key]
    assert len(a["per_seed"]) == 2 and a["per_seed"][0]["seed"] == 0 and a["per_seed"][1]["seed"] == 1


def test_synthetic_joins_training_only_and_pairs_with_a_baseline(phantoms, fake_samples, tmp_path):
    base = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "real"), epochs=2, **FAST))
    s = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "mix"), epochs=2, synthetic=str(fake_samples),
                      synthetic_ratio=0.5, baseline=str(tmp_path / "real"), **FAST))
    ps = s["per_seed"][0]
    assert ps["n_train_synthetic"] == sum(round(0.5 * c) for c in _class_counts(phantoms))
    assert s["n_test"] == base["n_test"]
    p = s["paired"]
    assert -1 <= p["delta_auroc"] <= 1 and 0 <= p["p_value"] <= 1 and "only_a_correct" in p["mcnemar"]
    tstr = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "tstr"), epochs=2, synthetic=str(fake_samples),
                         synthetic_only=True, **FAST))
    assert tstr["per_seed"][0]["n_train_real"] == 0 and tstr["per_seed"][0]["n_train_synthetic"] > 0



def test_pretrain_on_synthetic_then_fine_tune_on_real(phantoms, fake_samples, tmp_path):
    """--synthetic-mode pretrain: epochs on the synthetic images alone, then the real ones with the usual selection;
    the kept epoch is a fine-tuning one, and the run differs from mixing the same images in."""
    cfg = dict(data=str(phantoms), epochs=2, synthetic=str(fake_samples), synthetic_ratio=0.5, **FAST)
    pre = run(ClassifierConfig(out=str(tmp_path / "pre"), synthetic_mode="pretrain", pretrain_epochs=3, **cfg))
    mix = run(ClassifierConfig(out=str(tmp_path / "mix"), **cfg))
    phases = [h["phase"] for h in pre["per_seed"][0]["history"]]
    assert phases[:3] == ["pretrain"] * 3 and set(phases[3:]) == {"train"} and len(phases) == 5
    assert pre["per_seed"][0]["n_train_synthetic"] == mix["per_seed"][0]["n_train_synthetic"] > 0
    assert pre["config"]["synthetic_mode"] == "pretrain" and pre["auroc"] != mix["auroc"]
    with pytest.raises(UserError, match="needs --synthetic"):
        ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), synthetic_mode="pretrain").validate()
    with pytest.raises(UserError, match="applies to --synthetic-mode pretrain"):
        ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), pretrain_epochs=2).validate()


@pytest.mark.parametrize("variant", [dict(select="last"), dict(select="loss", schedule="cosine"),
                                     dict(ema=0.9, select="last")])
def test_epoch_selection_schedule_and_weight_average(phantoms, tmp_path, variant):
    """Each variance-cutting option trains, records val loss and AUROC per epoch, and keeps the epoch it should."""
    s = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path), epochs=3, patience=1, **FAST, **variant))
    seed = s["per_seed"][0]
    history = seed["history"]
    assert all(np.isfinite(h["val_loss"]) for h in history)
    if variant["select"] == "last":
        assert len(history) == 3 and seed["best_epoch"] == 3
    else:
        best = min(history, key=lambda h: h["val_loss"])
        assert seed["best_epoch"] == best["epoch"]
    plain = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "plain"), epochs=3, patience=1, **FAST,
                                 select="last"))
    if variant != dict(select="last"):
        assert s["auroc"] != plain["auroc"] or s["per_seed"][0]["val_auroc"] != plain["per_seed"][0]["val_auroc"]


@pytest.mark.parametrize("bad, message", [(dict(ema=1.0), "--ema must be in"), (dict(select="best"), "--select"),
                                          (dict(schedule="step"), "--schedule")])
def test_variance_options_refuse_bad_values(phantoms, tmp_path, bad, message):
    with pytest.raises(UserError, match=message):
        ClassifierConfig(data=str(phantoms), out=str(tmp_path), **bad).validate()


def test_tstr_uses_the_real_class_ratio():
    """500 + 500 synthetic images, a 251:80 real training split: train-on-synthetic takes 500 + 159."""
    syn = SimpleNamespace(labels=np.repeat([0, 1], 500))
    cfg = ClassifierConfig(data="x.h5", synthetic="s.h5", synthetic_only=True)
    idx = _synthetic_subset(syn, {0: 251, 1: 80}, cfg, seed=0)
    assert np.bincount(syn.labels[idx]).tolist() == [500, 500 * 80 // 251]
    one_class = SimpleNamespace(labels=np.zeros(500, int))
    with pytest.raises(UserError, match="no images of class 1"):
        _synthetic_subset(one_class, {0: 251, 1: 80}, cfg, seed=0)


def _class_counts(path):
    labels = H5ImageDataset(path, "train").labels
    return [int((labels == c).sum()) for c in (0, 1)]


def test_synthetic_images_never_reach_validation_or_test(phantoms, tmp_path):
    test = H5ImageDataset(phantoms, "test", in_memory=True)
    leaky = _samples(tmp_path / "leak.h5", test.images, test.labels, test.names, phantoms)  # named like test images
    with pytest.raises(UserError, match="pixel-identical to validation/test images"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), epochs=1, synthetic=str(leaky),
                      synthetic_per_class=5, **FAST))


def test_renamed_test_images_are_refused_with_one_line_and_exit_2(phantoms, tmp_path):
    """The audit's attack: the real test images, renamed like synthetic ones, in a samples file that claims the
    right provenance. Names prove nothing; the pixels give it away."""
    test = H5ImageDataset(phantoms, "test", in_memory=True)
    names = [f"synthetic_no-finding_{i:06d}.png" for i in range(len(test))]
    renamed = _samples(tmp_path / "renamed.h5", test.images, test.labels, names, phantoms)
    r = run_tool("train_resnet.py", "--data", phantoms, "--synthetic", renamed, "--out", tmp_path / "x",
                 "--epochs", "1", "--size", "32", "--device", "cpu")
    assert r.returncode == 2 and "pixel-identical" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "metrics.json").exists()
    noisy = np.clip(test.images.astype(int) + np.random.default_rng(1).integers(-1, 2, test.images.shape), 0, 255)
    disguised = _samples(tmp_path / "noisy.h5", noisy.astype(np.uint8), test.labels, names, phantoms)
    with pytest.raises(UserError, match="near-identical"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "y"), epochs=1, synthetic=str(disguised), **FAST))


def test_synthetic_images_must_come_from_the_datasets_own_training_split(phantoms, fake_samples, tmp_path):
    train = H5ImageDataset(fake_samples, "synthetic", in_memory=True)
    other = tmp_path / "other.h5"
    generate(other, n=40, size=32, seed=7)
    cases = {"does not record": _samples(tmp_path / "none.h5", train.images, train.labels, train.names),
             "trained on other data": _samples(tmp_path / "o.h5", train.images, train.labels, train.names, other),
             "'test' split": _samples(tmp_path / "t.h5", train.images, train.labels, train.names, phantoms, "test")}
    for message, path in cases.items():
        with pytest.raises(UserError, match=message):
            run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), epochs=1, synthetic=str(path), **FAST))


def test_real_fraction_keeps_whole_patients(phantoms, tmp_path):
    s = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path), epochs=1, real_fraction=0.25, **FAST))
    assert 0 < s["per_seed"][0]["n_train_real"] < 0.5 * sum(_class_counts(phantoms))


def test_pretrained_weights_are_folded_into_one_gray_channel(tmp_path):
    torch.manual_seed(0)
    ref = resnet18().eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    model = classifier.build(pretrained=True, weights=str(tmp_path / "r18.pth")).eval()
    x = torch.rand(2, 1, 48, 48) * 2 - 1
    mean = torch.tensor(classifier.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(classifier.IMAGENET_STD)[None, :, None, None]
    rgb = (((x + 1) / 2).expand(-1, 3, -1, -1) - mean) / std
    with torch.no_grad():
        diff = (ref.conv1(rgb) - model.conv1(x))[..., 2:-2, 2:-2]  # identical away from the zero-padded border
        assert diff.abs().max() < 1e-4
        assert torch.equal(model.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(UserError, match="not a ResNet-18 state dict"):
        classifier.build(weights=str(tmp_path / "bad.pth"))


def test_augmentation_never_flips():
    x = torch.full((4, 1, 32, 32), -1.0)
    x[..., :, 24:] = 1.0  # bright band on the image right
    out = classifier.augment(x, torch.Generator().manual_seed(0))
    assert (out[..., :, 20:].mean(dim=(1, 2, 3)) > out[..., :, :12].mean(dim=(1, 2, 3))).all()


def test_cli_errors(phantoms, tmp_path):
    r = run_tool("train_resnet.py", "--data", phantoms, "--synthetic-only", "--out", tmp_path)
    assert r.returncode == 2 and "--synthetic" in r.stderr
    r = run_tool("train_resnet.py", "--data", phantoms, "--real-fraction", "1.5", "--out", tmp_path)
    assert r.returncode == 2 and "--real-fraction" in r.stderr


def test_the_checkpoint_records_its_architecture_and_rebuilds_the_network(tmp_path):
    torch.manual_seed(0)
    model = classifier.build(2).eval()
    classifier.save(tmp_path / "m.pt", model.state_dict(), ["No Finding", "Infiltration"], size=32, seed=4)
    loaded, meta = classifier.load(tmp_path / "m.pt")
    assert (meta["arch"], meta["channels"], meta["size"], meta["seed"]) == ("resnet18", 1, 32, 4)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    features = loaded.penultimate(x)
    assert features.shape == (3, 512)
    assert torch.equal(loaded(x), model(x)) and torch.allclose(loaded.fc(features), loaded(x), atol=1e-6)
    # a checkpoint written before `arch` was recorded is a ResNet-18
    old = {"format": "cxrgan-classifier/1", "state": model.state_dict(), "classes": ["a", "b"], "size": 32, "seed": 0}
    torch.save(old, tmp_path / "old.pt")
    assert torch.equal(classifier.load(tmp_path / "old.pt")[0](x), model(x))
    torch.save({**old, "arch": "vgg99"}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="unknown classifier architecture 'vgg99'"):
        classifier.load(tmp_path / "bad.pt")


def test_control_arms_add_as_many_real_copies_as_the_synthetic_arm(phantoms):
    train = H5ImageDataset(phantoms, "train", in_memory=True)
    counts = np.bincount(train.labels)
    for control in ARMS:
        cfg = ClassifierConfig(data=str(phantoms), control=control, synthetic_ratio=0.5)
        copies, labels = control_copies(train.images, train.labels, cfg, seed=0)
        assert np.bincount(labels).tolist() == [round(0.5 * n) for n in counts]
        originals = {x.tobytes() for x in train.images}
        identical = sum(x.tobytes() in originals for x in copies)
        assert identical == len(copies) if control == "oversample" else identical == 0
    per_class = ClassifierConfig(data=str(phantoms), control="augment", synthetic_per_class=7)
    assert np.bincount(control_copies(train.images, train.labels, per_class, 0)[1]).tolist() == [7, 7]


def test_control_arm_trains_and_compares_with_several_baselines(phantoms, tmp_path):
    run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "real"), epochs=1, **FAST))
    c = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "aug"), epochs=1, control="augment",
                             baseline=str(tmp_path / "real"), **FAST))
    assert c["per_seed"][0]["n_train_control"] == c["per_seed"][0]["n_train_real"]
    both = run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "over"), epochs=1, control="oversample",
                                baseline=f"{tmp_path / 'real'},{tmp_path / 'aug'}", **FAST))
    assert [p["baseline"] for p in both["comparisons"]] == [str(tmp_path / "real"), str(tmp_path / "aug")]
    with pytest.raises(UserError, match="without --synthetic"):
        ClassifierConfig(data="x", control="oversample", synthetic="s.h5").validate()
    with pytest.raises(UserError, match="--control must be one of"):
        ClassifierConfig(data="x", control="mixup").validate()
    with pytest.raises(UserError, match="no predictions.npz"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), baseline=str(tmp_path / "nope"), **FAST))


# ---------------------------------------------------------------- test-only rows of the arm and backbone tables

TOOL_FAST = dict(size=32, device="cpu", n_boot=100, lr=1e-3, epochs=1)


class _TinyNet(torch.nn.Module):
    """A test-only classifier backbone: one convolution, pooled; ``penultimate`` as BACKBONES asks."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, n_classes)

    def penultimate(self, x):
        return torch.relu(self.bn1(self.conv1(x))).mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.penultimate(x))


TINY_BACKBONE = classifier.Backbone(lambda n_classes, pretrained, weights: _TinyNet(n_classes), "TinyNet-4")


def _inverted(copies, seed):
    return 255 - copies


def test_a_test_only_control_arm_registered_in_the_table_trains_and_reaches_the_report(phantoms, fake_samples,
                                                                                        tmp_path, monkeypatch):
    from cxrgan.classify.arms import Arm
    from cxrgan.report import build

    monkeypatch.setitem(ARMS, "inverted", Arm(_inverted, "real + inverted real copies", "inversion"))
    monkeypatch.setitem(classifier.BACKBONES, "tiny", TINY_BACKBONE)  # quick: the arm is under test here
    train = H5ImageDataset(phantoms, "train", in_memory=True)
    drawn, labels = control_copies(train.images, train.labels, ClassifierConfig(data="x", control="oversample"), 0)
    inverted, same = control_copies(train.images, train.labels, ClassifierConfig(data="x", control="inverted"), 0)
    assert np.array_equal(inverted, 255 - drawn) and np.array_equal(labels, same)  # the same draw, then the row's
    tool = load_tool("train_resnet")
    assert '"inverted" real + inverted real copies' in " ".join(tool.main.__doc__.split())  # the help lists it
    clf = tmp_path / "outputs" / "classify"
    fast = dict(TOOL_FAST, arch="tiny")
    tool.main(data=str(phantoms), out=str(clf / "real"), **fast)
    tool.main(data=str(phantoms), out=str(clf / "real+inverted"), control="inverted", baseline=str(clf / "real"),
              **fast)
    tool.main(data=str(phantoms), out=str(clf / "real+synthetic"), synthetic=str(fake_samples),
              baseline=f"{clf / 'real'},{clf / 'real+inverted'}", **fast)
    m = json.loads((clf / "real+inverted" / "metrics.json").read_text())
    assert m["config"]["control"] == "inverted" and m["per_seed"][0]["n_train_control"] == len(train)
    report = build(tmp_path / "outputs").read_text()
    assert "| real+inverted | real + inverted real copies |" in report
    assert re.search(r"\*\*real\+synthetic\*\* vs real\+inverted: synthetic data (beat|did not beat|did worse than) "
                     r"inversion", report)


def test_a_test_only_backbone_registered_in_the_table_trains_and_names_the_report(phantoms, tmp_path, monkeypatch):
    from cxrgan.metrics.features import feature_net
    from cxrgan.report import build

    monkeypatch.setitem(classifier.BACKBONES, "tiny", TINY_BACKBONE)
    tool = load_tool("train_resnet")
    assert "tiny (TinyNet-4)" in tool.main.__doc__
    clf = tmp_path / "outputs" / "classify"
    tool.main(data=str(phantoms), out=str(clf / "real"), arch="tiny", **TOOL_FAST)
    m = json.loads((clf / "real" / "metrics.json").read_text())
    assert m["config"]["arch"] == "tiny"
    model, meta = classifier.load(clf / "real" / "model-seed0.pt")
    assert isinstance(model, _TinyNet) and meta["arch"] == "tiny"
    assert "TinyNet-4 penultimate layer, 4-d" in feature_net(f"classifier:{clf / 'real' / 'model-seed0.pt'}",
                                                             device="cpu").description
    assert "TinyNet-4, mean over seeds" in build(tmp_path / "outputs").read_text()
    # a paired test against an arm of another architecture is refused before training
    with pytest.raises(UserError, match="trained --arch tiny, this run --arch resnet18"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "other"), baseline=str(clf / "real"),
                             **TOOL_FAST))
    with pytest.raises(UserError, match="--arch must be one of resnet18, tiny"):
        ClassifierConfig(data="x", arch="vgg").validate()


# ---------------------------------------------------------------- extra test sets (--test-extra)

EXTRA_FAST = dict(size=32, device="cpu", n_boot=20, lr=1e-3, epochs=1, seeds=2)


def _external(path, seed: int, shift: int, n: int = 40, keep=None):
    """Every image of a phantom file of another seed in one test split, under other names and patients (phantom
    ids and names restart in every file): an external test set, as make_hdf5 --fractions 0,0,1 builds."""
    src = path.with_name(path.stem + "-src.h5")
    generate(src, n=n, size=32, seed=seed)
    parts = [H5ImageDataset(src, s, in_memory=True) for s in ("train", "val", "test")]
    rows = [(int(y), im, int(pid)) for p in parts for y, im, pid in zip(p.labels, p.images, p.patient_ids)]
    rows = [r for r in rows if keep is None or keep(r)]
    w = DatasetWriter(path, 32, ["No Finding", "Infiltration"], {"test": len(rows)})
    for i, (label, image, pid) in enumerate(rows):
        w.add("test", label, f"external{seed}_{i:04d}.png", image=image, patient_id=pid + shift)
    w.close(source="test")
    return path


@pytest.fixture(scope="module")
def externals(tmp_path_factory):
    d = tmp_path_factory.mktemp("ext")
    return _external(d / "ext-a.h5", 5, 10_000), _external(d / "ext-b.h5", 6, 20_000)


def test_extra_test_sets_end_to_end(phantoms, fake_samples, externals, tmp_path):
    from cxrgan.report import build

    ext_a, ext_b = externals
    clf = tmp_path / "outputs" / "classify"
    fast = [a for k, v in EXTRA_FAST.items() for a in (f"--{k.replace('_', '-')}", v)]
    r = run_tool("train_resnet.py", "--data", phantoms, "--out", clf / "real", "--test-extra", ext_a,
                 "--test-extra", f"{ext_b}:test", *fast, timeout=300)  # the flag repeated: two extra sets
    assert r.returncode == 0, r.stderr
    m = json.loads((clf / "real" / "metrics.json").read_text())
    assert [x["test"] for x in m["extra_tests"]] == [f"{ext_a}:test", f"{ext_b}:test"]
    for x, path in zip(m["extra_tests"], externals):
        assert x["n_test"] == len(H5ImageDataset(path, "test"))
        for k in ("accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity"):
            assert {k, f"{k}_ci95", f"{k}_ci95_test_images_only", f"{k}_sd"} <= set(x)
            assert x[f"{k}_ci95"][0] <= x[k] <= x[f"{k}_ci95"][1]
    assert all(len(s["extra_tests"]) == 2 and "auroc" in s["extra_tests"][1] for s in m["per_seed"])
    npz = np.load(clf / "real" / "predictions.npz")
    assert {"names", "y", "scores"} <= set(npz.files) and npz["scores"].shape == (2, m["n_test"])
    assert npz["extra1_scores"].shape == (2, m["extra_tests"][1]["n_test"]) and len(npz["extra_tests"]) == 2
    assert "## Extra test set" in (clf / "real" / "metrics.md").read_text()
    # the synthetic arm names ext-b by another path: comparisons match a set by its images, not its path
    copy_b = tmp_path / "copy-of-b.h5"
    copy_b.write_bytes(ext_b.read_bytes())
    s = run(ClassifierConfig(data=str(phantoms), out=str(clf / "real+synthetic"), synthetic=str(fake_samples),
                             synthetic_ratio=0.5, test_extra=f"{ext_a},{copy_b}", baseline=str(clf / "real"),
                             **EXTRA_FAST))
    extra = s["comparisons"][0]["extra"]
    assert [x["test"] for x in extra] == [f"{ext_a}:test", f"{copy_b}:test"]
    # every image set the runs read is named with its content hash (the synthetic arm names its exact samples)
    assert s["inputs"]["synthetic"]["content_sha256"] == H5ImageDataset(fake_samples, "synthetic").info.attrs[
        "content_sha256"]
    hashes = [x["content_sha256"] for x in s["inputs"]["test_extra"]]
    assert hashes == [H5ImageDataset(p, "test").info.attrs["content_sha256"] for p in externals]  # b's copy: b's hash
    assert hashes[0] != hashes[1]
    assert "synthetic" not in m["inputs"] and m["inputs"]["train"]["file"] == f"{phantoms}:train"
    assert all(-1 <= x["delta_auroc"] <= 1 and "only_b_correct" in x["mcnemar"] for x in extra)
    report = build(tmp_path / "outputs").read_text()
    for name in ("internal", "ext-a.h5", "copy-of-b.h5"):
        assert f"| real+synthetic | {name} | real + synthetic" in report
    assert "| real+synthetic | real | ext-a.h5 | 2/2 |" in report
    assert re.search(r"\*\*real\+synthetic\*\* vs real: on the internal test set, .*\. On ext-a\.h5 \(\d+ test "
                     r"images\): .*\. On copy-of-b\.h5", report)
    # the study's verdict shape: the synthetic arm against every control on the pooled test images (matched by
    # image, so ext-b and its copy pool together)
    pooled = m["n_test"] + sum(x["n_test"] for x in m["extra_tests"])
    assert "## Primary endpoint" in report and f"| real+synthetic | 1 | real | {pooled} |" in report
    assert re.search(rf"\*\*Primary endpoint, real\+synthetic\*\* \(real fraction 1, {pooled} pooled test images from "
                     r"3 test set\(s\)\): .* — \*\*(helps|hurts|no detectable difference)\*\*", report)


def test_the_verdict_helps_only_when_every_control_is_beaten(tmp_path):
    """verdict.primary: an intersection-union decision over the controls, on images matched by name."""
    from cxrgan.classify import verdict

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    names = np.array([f"img{i}.png" for i in range(len(y))])

    def arm(name, skill, order=slice(None)):
        scores = skill * (2 * y - 1) + rng.normal(0, 1, (4, len(y)))
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "predictions.npz", names=names[order], y=y[order], scores=scores[:, order],
                 extra_tests=np.array([], dtype=str))
        return tmp_path / name

    real, weak, strong = arm("real", 1.0), arm("weak", 0.2), arm("strong", 3.0, order=slice(None, None, -1))
    res = verdict.primary(strong, {"real": real, "weak": weak})
    assert res["decision"] == verdict.HELPS and res["best_control"] == "real"
    assert res["comparisons"]["real"]["n_test"] == len(y) and res["comparisons"]["real"]["delta_auroc"] > 0
    assert verdict.primary(real, {"weak": weak, "strong": strong})["decision"] == verdict.HURTS
    same = verdict.primary(arm("again", 1.0), {"real": real})
    lo, hi = same["comparisons"]["real"]["ci95"]
    assert same["half_width"] > 0 and lo < 0 < hi
    assert verdict.decide({"a": {"ci95": (0.01, 0.2)}, "b": {"ci95": (-0.01, 0.2)}}) == verdict.UNDECIDED
    h, x, u = verdict.HELPS, verdict.HURTS, verdict.UNDECIDED  # the rule over several synthetic arms
    assert verdict.overall([x, h, u]) == h and verdict.overall([x, x]) == x and verdict.overall([x, u]) == u
    assert verdict.overall([]) == u
    # one folder per generator: the runs are grouped by folder (the interval holds over generator retraining)
    folders = [arm("gen0", 1.8), arm("gen1", 0.6)]  # two generators far apart
    nested = verdict.primary(folders, {"real": real})["comparisons"]["real"]
    names_b, y_b, b, groups = verdict.combined_predictions(folders)
    assert groups == [0] * 4 + [1] * 4 and nested["groups"] == [None, 2]
    names_a, _, a, _ = verdict.combined_predictions(real)
    order = np.array([list(names_b).index(n) for n in names_a])
    flat = stats.paired_bootstrap_auroc(y, a, b[:, order], 2000, 0)
    assert nested["delta_auroc"] == pytest.approx(flat["delta_auroc"])
    assert nested["se"] > 1.5 * flat["se"] and nested["df"] < flat["df"]
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "predictions.npz", names=np.array(["x.png", "z.png"]), y=np.array([0, 1]),
             scores=np.zeros((2, 2)), extra_tests=np.array([], dtype=str))
    with pytest.raises(UserError, match="share no test images"):
        verdict.primary(strong, {"other": other})


def test_the_verdict_on_one_test_set_of_several(tmp_path):
    """``sets`` picks the internal test set (0) or an extra one (j + 1) out of a run's predictions."""
    from cxrgan.classify import verdict
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / "predictions.npz", names=np.array(["a", "b"]), y=np.array([0, 1]),
             scores=np.array([[0.1, 0.9]]), extra_tests=np.array(["x.h5:test"]), extra0_names=np.array(["c", "d", "e"]),
             extra0_y=np.array([1, 0, 1]), extra0_scores=np.array([[0.2, 0.3, 0.4]]))
    names, y, scores = verdict.pooled_predictions(tmp_path / "run")
    assert list(names) == ["a", "b", "c", "d", "e"] and scores.shape == (1, 5)
    names, y, scores = verdict.pooled_predictions(tmp_path / "run", (1,))
    assert list(names) == ["c", "d", "e"] and list(y) == [1, 0, 1] and scores.tolist() == [[0.2, 0.3, 0.4]]
    assert list(verdict.combined_predictions(tmp_path / "run", (0,))[0]) == ["a", "b"]
    with pytest.raises(UserError, match="holds 2 test set"):
        verdict.pooled_predictions(tmp_path / "run", (2,))


def test_extra_test_sets_are_refused_when_they_cannot_test(phantoms, externals, tmp_path):
    same_patients = _external(tmp_path / "same.h5", 5, 0)  # phantom ids from 1: they are --data's patients too
    r = run_tool("train_resnet.py", "--data", phantoms, "--out", tmp_path / "x", "--test-extra", same_patients,
                 "--size", "32", "--device", "cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"has images in both {phantoms}:train and --test-extra {same_patients}:test" in r.stderr
    assert "give a --test-extra file of other patients" in r.stderr
    other = tmp_path / "64.h5"
    generate(other, n=20, size=64, seed=3)
    one_class = _external(tmp_path / "one.h5", 7, 30_000, keep=lambda row: row[0] == 0)
    cases = {f"{phantoms}:train": "of its images are training images",
             f"{phantoms}:val": "patient", str(other): "holds 64x64 images",
             str(one_class): "holds only 'No Finding' images"}
    for ref, message in cases.items():
        with pytest.raises(UserError, match=message):
            run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "y"), test_extra=ref, **EXTRA_FAST))


def test_a_synthetic_file_holding_an_external_test_image_is_refused(phantoms, fake_samples, externals, tmp_path):
    ext = H5ImageDataset(externals[0], "test", in_memory=True)
    syn = H5ImageDataset(fake_samples, "synthetic", in_memory=True)
    images = syn.images.copy()
    images[3] = ext.images[5]
    leaky = _samples(tmp_path / "leak.h5", images, syn.labels, syn.names, phantoms)
    with pytest.raises(UserError, match="pixel-identical to validation/test images"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), synthetic=str(leaky),
                             test_extra=str(externals[0]), **EXTRA_FAST))
    images[3] = np.clip(ext.images[5].astype(int) + 1, 0, 255)
    near = _samples(tmp_path / "near.h5", images, syn.labels, syn.names, phantoms)
    with pytest.raises(UserError, match="near-identical"):
        run(ClassifierConfig(data=str(phantoms), out=str(tmp_path / "x"), synthetic=str(near),
                             test_extra=str(externals[0]), **EXTRA_FAST))
