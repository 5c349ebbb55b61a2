"""fid_is: the FID Inception network against torch-fidelity, domain features, the feature cache and the audit."""

import json

import numpy as np
import pytest
import torch

from cxrgan.classify import model as classifier
from cxrgan.data.datasetfile import SAMPLES_SCHEMA, DatasetWriter
from cxrgan.errors import UserError
from cxrgan.metrics import networks
from cxrgan.metrics.features import cached_features, feature_net
from cxrgan.metrics.networks import FEATURE_NETS, FeatureNetRow
from cxrgan.metrics.inception import load_inception, random_weights, tf1_resize_bilinear
from cxrgan.data.phantoms import generate
from cxrgan.metrics.evaluate import QualityConfig, evaluate, metric_columns
from cxrgan.data.reader import H5ImageDataset
from conftest import load_tool, run_tool


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "ph.h5"
    generate(path, n=120, size=32, seed=3)
    return path


@pytest.fixture(scope="module")
def fake(real, tmp_path_factory):
    """30 'generated' images per the other phantom seed, darker, plus two exact copies of training images."""
    tmp = tmp_path_factory.mktemp("fake")
    generate(tmp / "other.h5", n=40, size=32, seed=11)
    other = H5ImageDataset(tmp / "other.h5", "train", in_memory=True)
    train = H5ImageDataset(real, "train", in_memory=True)
    images = np.concatenate([(other.images[:28] * 0.8).astype(np.uint8), train.images[[3, 7]]])
    labels = np.concatenate([other.labels[:28], train.labels[[3, 7]]])
    path = tmp / "synthetic.h5"
    w = DatasetWriter(path, 32, ["No Finding", "Infiltration"], {"synthetic": len(images)}, with_patients=False,
                      schema=SAMPLES_SCHEMA)
    w.add_batch("synthetic", labels, [f"synthetic_{i:06d}" for i in range(len(images))], images)
    w.close(source="test")
    return path


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "inception-random.pth"
    torch.save(random_weights(seed=0), path)
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("clf") / "model-seed0.pt"
    torch.save({"format": "cxrgan-classifier/1", "state": classifier.build(2).state_dict(),
                "classes": ["No Finding", "Infiltration"], "size": 32, "seed": 0}, path)
    return path


def test_tf1_resize_samples_without_half_pixel_offset():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = tf1_resize_bilinear(x, 4)  # output i samples input i * 2/4: 0, 0.5, 1 (edge), 1 (clamped)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([0.0, 10.0, 20.0, 20.0]))
    same = torch.rand(1, 3, 7, 7)
    assert torch.equal(tf1_resize_bilinear(same, 7), same)


def test_agrees_with_torch_fidelity(real, fake, inception_weights, tmp_path):
    import torch_fidelity

    fake_ds, real_ds = H5ImageDataset(fake, "synthetic", in_memory=True), H5ImageDataset(real, "test", in_memory=True)
    n = min(len(fake_ds), len(real_ds))
    ours = evaluate(QualityConfig(real=f"{real}:test", fake=str(fake), out=str(tmp_path / "m.json"),
                                  inception_weights=str(inception_weights), audit=False, per_class=False,
                                  kid_subsets=10, kid_subset_size=n, cache="", seed=2020, device="cpu"))

    class RGB(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = torch.from_numpy(images)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i][None].expand(3, -1, -1).contiguous()

    ref = torch_fidelity.calculate_metrics(
        input1=RGB(fake_ds.images), input2=RGB(real_ds.images), isc=True, fid=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        feature_layer_prc="2048", kid_subsets=10, kid_subset_size=n, rng_seed=2020, cuda=False, verbose=False,
        save_cpu_ram=True, cache=False)
    assert ours["fid"] > 1.0  # the features are not collapsed: the test can fail
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-4)
    assert ours["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-3, abs=1e-6)
    assert ours["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3)
    assert ours["precision"] == pytest.approx(ref["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(ref["recall"], abs=1e-6)
    assert (ours["n_real"], ours["n_fake"]) == (len(real_ds), len(fake_ds))
    assert any("2048" in w for w in ours["warnings"]) and any("Inception Score from" in w for w in ours["warnings"])


def test_inception_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such file"):
        load_inception(str(tmp_path / "missing.pth"))
    bad = tmp_path / "resnet.pth"
    torch.save(classifier.build(2).state_dict(), bad)
    with pytest.raises(UserError, match="not the FID Inception network's weights"):
        load_inception(str(bad))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="--inception-weights PATH"):
        load_inception(None)


def test_domain_features_audit_and_report_keys(real, fake, classifier_ckpt, tmp_path):
    out = tmp_path / "q" / "fid.json"
    r = run_tool("fid_is.py", "--real", real, "--fake", fake, "--out", out, "--features",
                 f"classifier:{classifier_ckpt}", "--cache", tmp_path / "cache", "--kid-subset-size", "20",
                 "--device", "cpu")
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "n_real", "n_fake", "near_copies",
                "near_copy_threshold", "near_copies_features", "near_copy_threshold_features"):
        assert key in s, key
    assert s["is_mean"] is None  # no ImageNet classes in a chest X-ray classifier
    assert s["features"]["network"] == "classifier" and s["features"]["dim"] == 512
    assert set(s["per_class"]) == {"No Finding", "Infiltration"}
    assert sum(m["n_fake"] for m in s["per_class"].values()) == s["n_fake"] == 30
    # the two copied training images are found in pixel space, and little else is
    assert 2 <= s["near_copies"] <= 4
    assert s["audit_pixels"]["synthetic_to_train_median"] > s["near_copy_threshold"]
    for png in s["figures"].values():
        assert (out.parent / png).stat().st_size > 1000
    assert s["real"]["content_sha256"] and s["args"]["features"].startswith("classifier:")
    # the reference: the real training split scored in the generated images' place, overall and per class
    ref, n_train = s["real_reference"], len(H5ImageDataset(real, "train"))
    assert ref["n_fake"] == n_train and ref["n_real"] == s["n_real"] and ref["set"].endswith(":train")
    assert sum(m["n_fake"] for m in ref["per_class"].values()) == n_train
    assert 0.8 < ref["pixel_diversity"] < 1.25  # real images of other patients vary as much as the test images
    assert ref["precision"] > s["precision"]  # the darkened 'generated' images lie further off the real manifold
    from cxrgan.report import quality_section
    table, _ = quality_section([(out, s)], tmp_path)
    assert table.count("| *real training images (reference)* |") == 3  # overall + two classes


def test_feature_cache_is_keyed_by_content_and_split(real, classifier_ckpt, tmp_path):
    net = feature_net(f"classifier:{classifier_ckpt}", device="cpu")
    test = H5ImageDataset(real, "test")
    f1, _, hit1 = cached_features(net, test, tmp_path)
    f2, _, hit2 = cached_features(net, test, tmp_path)
    assert (hit1, hit2) == (False, True) and np.array_equal(f1, f2)
    _, _, hit3 = cached_features(net, H5ImageDataset(real, "val"), tmp_path)
    assert not hit3
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_features_match_the_classifier_penultimate_layer(real, classifier_ckpt):
    net = feature_net(f"classifier:{classifier_ckpt}", device="cpu")
    images = H5ImageDataset(real, "test").read_uint8(np.arange(4))
    model = classifier.build(2)
    model.load_state_dict(torch.load(classifier_ckpt, weights_only=True)["state"])
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images).unsqueeze(1).float() / 127.5 - 1
        trunk = torch.nn.Sequential(*list(model.children())[:-1])
        expected = trunk(x).flatten(1).numpy()
    assert np.allclose(net(images)[0], expected, atol=1e-5)


def test_cli_errors(real, fake, classifier_ckpt, tmp_path):
    r = run_tool("fid_is.py", "--real", real, "--fake", tmp_path / "nope.h5")
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run_tool("fid_is.py", "--real", f"{real}:train", "--fake", fake, "--features", f"classifier:{classifier_ckpt}")
    assert r.returncode == 2 and "training split itself" in r.stderr
    r = run_tool("fid_is.py", "--real", real, "--fake", fake, "--features", "vgg")
    assert r.returncode == 2 and "classifier:PATH" in r.stderr
    r = run_tool("fid_is.py", "--real", real, "--fake", fake, "--features", f"classifier:{tmp_path / 'x.pt'}")
    assert r.returncode == 2 and "train_resnet" in r.stderr


# A feature network that exists only in this test: a tiny random convolution, pooled to 8-d. Registering its row is
# the one change needed for fid_is to score with it.
class _TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _tiny_conv(argument, weights, device):
    torch.manual_seed(int(argument or 0))
    return (_TinyConv().to(device).eval(), f"seed{argument or 0}", lambda x: x.unsqueeze(1).float() / 127.5 - 1,
            "tiny random conv net, 8-d")


def test_a_test_only_feature_network_registered_in_the_table_runs_through_fid_is(real, fake, tmp_path, monkeypatch):
    monkeypatch.setitem(FEATURE_NETS, "tiny", FeatureNetRow(_tiny_conv, False, "a tiny random conv net",
                                                            argument="SEED"))
    assert networks.make_table().split()[-1] == "tiny:TINY"  # `make metrics TINY=1` writes metrics/tiny-RECIPE.json
    tool = load_tool("fid_is")
    assert "tiny[:SEED] (a tiny random conv net)" in " ".join(tool.main.__doc__.split())  # the help lists it
    out = tmp_path / "tiny.json"
    tool.main(real=str(real), fake=str(fake), out=str(out), features="tiny:3", cache=str(tmp_path / "cache"),
              kid_subset_size=20, device="cpu")
    s = json.loads(out.read_text())
    assert s["features"] == {"network": "tiny", "description": "tiny random conv net, 8-d", "key": "tiny-seed3",
                             "dim": 8}
    assert np.isfinite(s["fid"]) and s["is_mean"] is None and s["n_fake"] == 30 and "near_copies_features" in s
    assert all(p.name.endswith("-tiny-seed3.npz") for p in (tmp_path / "cache").glob("*.npz"))
    with pytest.raises(UserError, match=r"use inception, xrv\[:WEIGHTS\], classifier:.*or tiny\[:SEED\]"):
        feature_net("vgg", device="cpu")


def test_the_summary_and_report_columns_come_from_the_metric_table():
    columns = metric_columns()
    assert [c.key for c in columns] == ["fid", "kid_mean", "precision", "recall", "pixel_diversity", "is_mean"]
    values = {"fid": 12.3456, "kid_mean": 0.01234, "kid_std": 0.002, "precision": 0.5, "recall": None,
              "pixel_diversity": 0.98765, "is_mean": 2.0, "is_std": 0.1, "is_real_mean": 3.0}
    assert [c.cell(values) for c in columns] == ["12.35", "0.01234 ± 0.002", "0.500", "–", "0.988",
                                                 "2.000 ± 0.100 (3.000)"]
    tool = load_tool("fid_is")
    table = tool.summary_table({**values, "n_real": 4, "n_fake": 5, "per_class": {},
                                "features": {"network": "classifier"}})
    assert [c.header for c in table.columns] == ["set", "n_real", "n_fake", *(c.key for c in columns)]
