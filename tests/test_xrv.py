"""fid_is --features xrv: torchxrayvision's DenseNet-121, loaded safely from either kind of weights file."""

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from cxrgan.errors import UserError
from cxrgan.metrics.features import feature_net
from cxrgan.metrics.xrv import read_weights


@pytest.fixture(scope="module")
def published_like(tmp_path_factory):
    """Random-weight DenseNets saved as the published file is (a whole pickled model) and as a state dict."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()
    root = tmp_path_factory.mktemp("xrv")
    torch.save(model, root / "module.pt")
    torch.save(model.state_dict(), root / "state.pt")
    return model, root


def test_features_match_torchxrayvision_and_both_file_kinds_load(published_like):
    model, root = published_like
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224), dtype=np.uint8)
    with torch.no_grad():
        ref = model.features2(torch.from_numpy(xrv.datasets.normalize(images.astype(np.float32), 255))[:, None])
    for name in ("module.pt", "state.pt"):
        net = feature_net(f"xrv:{root / name}", device="cpu")
        feats, logits = net(images)
        assert feats.shape == (3, 1024) and logits is None and net.name == "xrv"
        assert np.allclose(feats, ref.numpy(), atol=1e-4)
    small = net(images[:, ::4, ::4].copy())[0]  # other sizes are resized to 224x224
    assert small.shape == (3, 1024)


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_file_that_would_run_code_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"classifier.weight": torch.zeros(1), "x": _Evil()}, bad)
    with pytest.raises(UserError, match="not a torchxrayvision DenseNet weights file"):
        read_weights(bad)
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UserError, match="no such file"):
        read_weights(tmp_path / "missing.pt")


def test_fid_is_scores_with_xrv_features(phantoms, published_like, tmp_path):
    from cxrgan.metrics.evaluate import QualityConfig, evaluate
    _, root = published_like
    m = evaluate(QualityConfig(real=f"{phantoms}:test", fake=f"{phantoms}:val", features=f"xrv:{root / 'state.pt'}",
                               out=str(tmp_path / "x.json"), audit=False, cache="", kid_subset_size=5,
                               device="cpu"))
    assert m["features"]["network"] == "xrv" and m["features"]["dim"] == 1024
    assert m["fid"] is not None and m["fid"] >= 0 and m["is_mean"] is None
