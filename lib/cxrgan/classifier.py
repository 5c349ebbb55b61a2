"""The ResNet-18 classifier used to test whether synthetic images help: one gray input channel, two classes.

Gray input: the first convolution takes one channel. With ImageNet weights its RGB filters are folded into one
(together with ImageNet's per-channel normalisation), which computes what the pretrained network computes on the
gray image replicated to RGB (exactly, away from the 3-pixel zero-padded border), at a third of the first layer's
cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from . import checkpoint
from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagenet_state(weights: str | None) -> dict:
    """torchvision's ImageNet ResNet-18 weights: from ``weights`` (a state-dict file) or downloaded to the torch
    hub cache on first use. Raises UserError when neither works."""
    if weights:
        state = checkpoint.load(weights, what="ResNet-18 state dict")
    else:
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            raise UserError(f"cannot download the ImageNet ResNet-18 weights ({str(e).splitlines()[0]}); "
                            f"fetch {ResNet18_Weights.IMAGENET1K_V1.url} elsewhere and pass --weights PATH, "
                            "or train from scratch without --pretrained") from None
    if not isinstance(state, dict) or "conv1.weight" not in state or state["conv1.weight"].shape[1] != 3:
        raise UserError("the weights file is not a torchvision ResNet-18 state dict (no 3-channel conv1.weight)")
    return state


def build(n_classes: int = 2, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """ResNet-18 taking (n, 1, H, W) images in [-1, 1]."""
    model = resnet18(num_classes=n_classes)
    conv = model.conv1
    model.conv1 = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=pretrained)
    if pretrained or weights:
        state = load_imagenet_state(weights)
        w = state.pop("conv1.weight")  # (64, 3, 7, 7), expects (rgb - mean) / std with rgb in [0, 1]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _ = model.load_state_dict(state, strict=False)
        assert set(missing) <= {"conv1.weight", "conv1.bias", "fc.weight", "fc.bias"}, missing
        mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD)[None, :, None, None]
        # input x in [-1, 1]: rgb = (x + 1) / 2, so conv(rgb_norm) = sum_c w_c/(2 s_c) x + sum_c w_c (1/2 - m_c)/s_c
        with torch.no_grad():
            model.conv1.weight.copy_((w / (2 * std)).sum(dim=1, keepdim=True))
            model.conv1.bias = nn.Parameter((w * (0.5 - mean) / std).sum(dim=(1, 2, 3)), requires_grad=True)
    return model


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                       align_corners=False)


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mild, laterality-preserving augmentation on a batch: rotation +-7 degrees, scale 0.9-1.1, shift +-6%,
    brightness and contrast +-10%. Never flips."""
    n = x.shape[0]
    r = lambda lo, hi: torch.rand(n, generator=generator, device="cpu").mul(hi - lo).add(lo)  # noqa: E731
    angle, scale = r(-7, 7) * math.pi / 180, r(0.9, 1.1)
    tx, ty = r(-0.06, 0.06), r(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1  # black fill
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast, bright = r(0.9, 1.1).to(x)[:, None, None, None], r(-0.1, 0.1).to(x)[:, None, None, None]
    return ((out - mean) * contrast + mean + bright).clamp(-1, 1)
