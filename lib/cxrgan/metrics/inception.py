"""The FID Inception network: Inception-v3 as in TensorFlow's 2015-12-05 graph, which FID and IS are defined on.

This is not torchvision's Inception-v3. The TF graph differs in four places, and numbers only agree with published
FIDs (pytorch-fid, torch-fidelity, the original TTUR code) when all four are reproduced:

- input: uint8 RGB resized to 299x299 with TensorFlow 1.x bilinear resampling (no half-pixel offset, no
  antialiasing), then scaled to [-1, 1] as (x - 128) / 128;
- the average-pool branches of the A, C and E blocks exclude the zero padding from the mean;
- the last E block (Mixed_7c) pools with max instead of average;
- the classifier has 1008 outputs; the Inception Score uses its logits without the bias, as the original code did.

Module and parameter names follow torchvision's, so the converted weights published by pytorch-fid
(``pt_inception-2015-12-05-6726825d.pth``) and by torch-fidelity (``weights-inception-2015-12-05-6726825d.pth``)
both load. Gray images are replicated to three channels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import torchfile
from ..errors import UserError

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)``: output pixel i samples input position
    i * in / out (no half-pixel centre), interpolating between floor and the next pixel, clamped at the edge."""
    def axis(n_in: int):
        pos = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(x.dtype)

    y_lo, y_hi, dy = axis(x.shape[2])
    x_lo, x_hi, dx = axis(x.shape[3])
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]
    rows = top + (bottom - top) * dy.view(1, 1, -1, 1)
    left, right = rows[:, :, :, x_lo], rows[:, :, :, x_hi]
    return left + (right - left) * dx.view(1, 1, 1, -1)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (TF's epsilon 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TF's average pool: padding does not count towards the mean
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x):
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _max_pool_reduce(x):
    return F.max_pool2d(x, 3, stride=2)


class Mixed(nn.Module):
    """One Inception block: parallel branches concatenated along channels.

    Each branch is ``(pool, chain, fork)``: an optional pooling of the block input, then the named convolutions of
    ``chain`` in sequence, then (E blocks) the named convolutions of ``fork`` each applied to the chain's output,
    their outputs concatenated. A branch with a pool and no convolutions is a pooling shortcut.
    """

    def __init__(self, convs: dict[str, BasicConv2d], branches: list[tuple]):
        super().__init__()
        for name, module in convs.items():
            self.add_module(name, module)
        self.branches = branches

    def forward(self, x):
        out = []
        for pool, chain, fork in self.branches:
            y = pool(x) if pool else x
            for name in chain:
                y = getattr(self, name)(y)
            out.extend([getattr(self, name)(y) for name in fork] if fork else [y])
        return torch.cat(out, 1)


def block_a(cin: int, pool_features: int) -> Mixed:
    c = BasicConv2d
    return Mixed({"branch1x1": c(cin, 64, 1),
                  "branch5x5_1": c(cin, 48, 1), "branch5x5_2": c(48, 64, 5, padding=2),
                  "branch3x3dbl_1": c(cin, 64, 1), "branch3x3dbl_2": c(64, 96, 3, padding=1),
                  "branch3x3dbl_3": c(96, 96, 3, padding=1),
                  "branch_pool": c(cin, pool_features, 1)},
                 [(None, ["branch1x1"], None), (None, ["branch5x5_1", "branch5x5_2"], None),
                  (None, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], None),
                  (_avg_pool, ["branch_pool"], None)])


def block_b(cin: int) -> Mixed:
    c = BasicConv2d
    return Mixed({"branch3x3": c(cin, 384, 3, stride=2),
                  "branch3x3dbl_1": c(cin, 64, 1), "branch3x3dbl_2": c(64, 96, 3, padding=1),
                  "branch3x3dbl_3": c(96, 96, 3, stride=2)},
                 [(None, ["branch3x3"], None), (None, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], None),
                  (_max_pool_reduce, [], None)])


def block_c(cin: int, c7: int) -> Mixed:
    c = BasicConv2d
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    return Mixed({"branch1x1": c(cin, 192, 1),
                  "branch7x7_1": c(cin, c7, 1), "branch7x7_2": c(c7, c7, **row), "branch7x7_3": c(c7, 192, **col),
                  "branch7x7dbl_1": c(cin, c7, 1), "branch7x7dbl_2": c(c7, c7, **col),
                  "branch7x7dbl_3": c(c7, c7, **row), "branch7x7dbl_4": c(c7, c7, **col),
                  "branch7x7dbl_5": c(c7, 192, **row),
                  "branch_pool": c(cin, 192, 1)},
                 [(None, ["branch1x1"], None), (None, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], None),
                  (None, [f"branch7x7dbl_{i}" for i in range(1, 6)], None), (_avg_pool, ["branch_pool"], None)])


def block_d(cin: int) -> Mixed:
    c = BasicConv2d
    return Mixed({"branch3x3_1": c(cin, 192, 1), "branch3x3_2": c(192, 320, 3, stride=2),
                  "branch7x7x3_1": c(cin, 192, 1), "branch7x7x3_2": c(192, 192, (1, 7), padding=(0, 3)),
                  "branch7x7x3_3": c(192, 192, (7, 1), padding=(3, 0)), "branch7x7x3_4": c(192, 192, 3, stride=2)},
                 [(None, ["branch3x3_1", "branch3x3_2"], None),
                  (None, [f"branch7x7x3_{i}" for i in range(1, 5)], None), (_max_pool_reduce, [], None)])


def block_e(cin: int, pool) -> Mixed:
    c = BasicConv2d
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    return Mixed({"branch1x1": c(cin, 320, 1),
                  "branch3x3_1": c(cin, 384, 1), "branch3x3_2a": c(384, 384, **row), "branch3x3_2b": c(384, 384, **col),
                  "branch3x3dbl_1": c(cin, 448, 1), "branch3x3dbl_2": c(448, 384, 3, padding=1),
                  "branch3x3dbl_3a": c(384, 384, **row), "branch3x3dbl_3b": c(384, 384, **col),
                  "branch_pool": c(cin, 192, 1)},
                 [(None, ["branch1x1"], None), (None, ["branch3x3_1"], ["branch3x3_2a", "branch3x3_2b"]),
                  (None, ["branch3x3dbl_1", "branch3x3dbl_2"], ["branch3x3dbl_3a", "branch3x3dbl_3b"]),
                  (pool, ["branch_pool"], None)])


class FIDInception(nn.Module):
    """uint8 images (n, 1 or 3, H, W) -> (pool3 features (n, 2048), bias-free logits (n, 1008))."""

    def __init__(self):
        super().__init__()
        c = BasicConv2d
        self.Conv2d_1a_3x3 = c(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = c(32, 32, 3)
        self.Conv2d_2b_3x3 = c(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = c(64, 80, 1)
        self.Conv2d_4a_3x3 = c(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = block_a(192, 32), block_a(256, 64), block_a(288, 64)
        self.Mixed_6a = block_b(288)
        self.Mixed_6b, self.Mixed_6c = block_c(768, 128), block_c(768, 160)
        self.Mixed_6d, self.Mixed_6e = block_c(768, 160), block_c(768, 192)
        self.Mixed_7a = block_d(768)
        self.Mixed_7b, self.Mixed_7c = block_e(1280, _avg_pool), block_e(2048, _max_pool_same)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError("FIDInception takes uint8 images")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((tf1_resize_bilinear(x, INPUT_SIZE) - 128) / 128).contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean(dim=(2, 3))
        return pool, pool @ self.fc.weight.T


def random_weights(seed: int = 0) -> dict:
    """A state dict of random weights with a variance-preserving (Kaiming-normal) init and non-trivial batch-norm
    statistics, for parity tests and speed benchmarks where the real weights cannot be downloaded. PyTorch's
    default init collapses this network's features to near-constant values (FID ~ 0), which would let a parity
    test pass for the wrong reasons."""
    torch.manual_seed(seed)
    model = FIDInception()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.state_dict()


def _check_state(state, source: str) -> dict:
    model_keys = set(FIDInception().state_dict())
    if not isinstance(state, dict):
        raise UserError(f"{source} is not a state dict of the FID Inception network")
    keys = {k for k in state if not k.endswith("num_batches_tracked")}
    need = {k for k in model_keys if not k.endswith("num_batches_tracked")}
    if keys != need:
        missing, extra = sorted(need - keys), sorted(keys - need)
        raise UserError(f"{source} is not the FID Inception network's weights (missing {missing[:2]}, "
                        f"unexpected {extra[:2]}); use pytorch-fid's or torch-fidelity's 2015-12-05 file")
    torchfile.check_finite(state, source, "FID Inception weights file")
    return state


def load_inception(weights: str | None = None, device="cpu") -> tuple[FIDInception, str]:
    """The FID Inception network with the 2015-12-05 weights, and a short id of the weights (for caches).

    ``weights``: a local copy of the converted weights (either published file). Without it they are downloaded
    once into the torch hub cache ($TORCH_HOME/hub/checkpoints) and checked against the hash in their name.
    """
    if weights:
        path = Path(weights)
        state = torchfile.load(path, what="FID Inception weights file")
        source = f"--inception-weights {path}"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    else:
        try:
            state = torch.hub.load_state_dict_from_url(WEIGHTS_URL, map_location="cpu", progress=True,
                                                       check_hash=True, weights_only=True)
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            raise UserError(f"cannot download the FID Inception weights ({str(e).splitlines()[0]}); fetch "
                            f"{WEIGHTS_URL} on a connected machine and pass --inception-weights PATH") from None
        source, digest = "the downloaded FID Inception weights", WEIGHTS_URL.rsplit("-", 1)[1].split(".")[0]
    model = FIDInception()
    with torchfile.rebuilding(source, "FID Inception weights file"):
        model.load_state_dict(_check_state(state, source), strict=False)
    # channels-last activations: ~1.4x faster convolutions on CPU, and the layout tensor cores want on GPU
    return model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False), digest


def feature_backbone(argument: str, weights: str | None, device) -> tuple:
    """The ``inception`` row of ``networks.FEATURE_NETS``: pool3 features and ImageNet logits (for IS)."""
    model, key = load_inception(weights, device)
    return model, key, lambda x: x.unsqueeze(1), "FID Inception-v3 (TF 2015-12-05 weights), pool3 2048-d"
