"""The chest X-ray feature network of the CXR generation literature: torchxrayvision's DenseNet-121
(``densenet121-res224-all``, trained on NIH, PadChest, CheXpert, MIMIC and others; Cohen et al. 2022). Its pooled
1024-d features give the Fréchet distance, KID and precision/recall that papers report as FID_xrv.

Input as torchxrayvision expects it: one channel, 224x224, pixel values scaled to [-1024, 1024].

Weights: downloaded once into the torch hub cache ($TORCH_HOME/hub/checkpoints) on a connected machine, or a local
file (``--features xrv:PATH``). The published file is a whole pickled model, not a state dict; it is read with
``torch.load(weights_only=True)`` and an allowlist of exactly the classes such a file holds (torchxrayvision's
DenseNet parts and the torch layers they use), never a blind unpickle. A plain state-dict file works too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

INPUT_SIZE = 224
WEIGHTS_NAME = "densenet121-res224-all"


def _xrv():
    try:
        import torchxrayvision
    except ImportError:
        raise UserError("--features xrv needs the torchxrayvision package (pip install -r requirements.txt)") from None
    return torchxrayvision


def allowed_classes() -> list:
    """What a pickled torchxrayvision DenseNet may contain: its own module classes and torch's layers."""
    from torch.nn.backends import thnn  # modules pickled by torch <= 1.4 (the published file) name its no-op backend

    m = _xrv().models
    return [m.DenseNet, m._DenseBlock, m._DenseLayer, m._Transition, nn.Sequential, nn.Conv2d, nn.BatchNorm2d,
            nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, set, thnn._get_thnn_function_backend]


def weights_url() -> str:
    return _xrv().models.model_urls[WEIGHTS_NAME]["weights_url"]


def _cached_download(url: str) -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(url).name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        try:
            torch.hub.download_url_to_file(url, str(tmp), progress=True)
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot download the torchxrayvision weights ({str(e).splitlines()[0]}); fetch {url} on "
                            "a connected machine and pass --features xrv:PATH") from None
        tmp.rename(path)
    return path


def read_weights(path: str | Path) -> dict:
    """The state dict in a torchxrayvision weights file: a pickled DenseNet (as published) or a state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--features xrv:{path}: no such file")
    try:
        with torch.serialization.safe_globals(allowed_classes()):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a torchxrayvision DenseNet weights file ({first[:200]})") from None
    state = saved.state_dict() if isinstance(saved, nn.Module) else saved
    if not isinstance(state, dict) or "classifier.weight" not in state:
        raise UserError(f"{path} is not a torchxrayvision DenseNet weights file (no classifier.weight)")
    return state


class XRVFeatures(nn.Module):
    """uint8-derived input (n, 1, H, W) in [-1024, 1024] -> the DenseNet's pooled features (n, 1024)."""

    def __init__(self, densenet: nn.Module):
        super().__init__()
        self.densenet = densenet

    def forward(self, x):
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > INPUT_SIZE)  # as torchxrayvision's fix_resolution
        out = F.relu(self.densenet.features(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def prepare(x: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W) -> float (n, 1, H, W) scaled as torchxrayvision's normalize(img, 255): [-1024, 1024]."""
    return x.unsqueeze(1).float().mul_(2048.0 / 255).sub_(1024.0)


def load_xrv(weights: str | None = None, device="cpu") -> tuple[XRVFeatures, str]:
    """The feature network and a short id of its weights (for caches)."""
    path = Path(weights) if weights else _cached_download(weights_url())
    state = read_weights(path)
    model = _xrv().models.DenseNet(weights=None, num_classes=state["classifier.weight"].shape[0])
    state = {k: v for k, v in state.items() if k != "op_threshs"}  # a buffer the published file may carry
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if k != "op_threshs"] or unexpected:
        raise UserError(f"{path} does not fit torchxrayvision's DenseNet-121 (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return XRVFeatures(model).to(device).eval().requires_grad_(False), digest


def feature_backbone(argument: str, weights: str | None, device) -> tuple:
    """The ``xrv[:WEIGHTS]`` row of ``networks.FEATURE_NETS`` (``weights``, Inception's, is not used)."""
    model, key = load_xrv(argument or None, device)
    return model, key, prepare, f"torchxrayvision DenseNet-121 ({WEIGHTS_NAME}), pooled 1024-d, input 224x224"
