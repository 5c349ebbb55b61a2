"""The classifier used to test whether synthetic images help, and its checkpoint (``cxrgan-classifier/1``).

``BACKBONES`` maps an architecture name to a builder of a network taking (n, 1, H, W) images in [-1, 1] whose
``penultimate(x)`` gives the features before the last linear layer (the domain features of fid_is). A checkpoint
records its ``arch``, input ``size`` and ``channels`` beside the weights, so ``load(path)`` rebuilds it and a new
backbone is one builder and one row here.

ResNet-18 (the study's): one gray input channel, two classes.

Gray input: the first convolution takes one channel. With ImageNet weights its RGB filters are folded into one
(together with ImageNet's per-channel normalisation), which computes what the pretrained network computes on the
gray image replicated to RGB (exactly, away from the 3-pixel zero-padded border), at a third of the first layer's
cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from .. import torchfile
from ..errors import UserError

FORMAT = "cxrgan-classifier/1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagenet_state(weights: str | None) -> dict:
    """torchvision's ImageNet ResNet-18 weights: from ``weights`` (a state-dict file) or downloaded to the torch
    hub cache on first use. Raises UserError when neither works."""
    if weights:
        state = torchfile.load(weights, what="ResNet-18 state dict")
    else:
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            raise UserError(f"cannot download the ImageNet ResNet-18 weights ({str(e).splitlines()[0]}); "
                            f"fetch {ResNet18_Weights.IMAGENET1K_V1.url} elsewhere and pass --weights PATH, "
                            "or train from scratch without --pretrained") from None
    source = weights or "the downloaded ImageNet weights"
    if not isinstance(state, dict) or not isinstance(state.get("conv1.weight"), torch.Tensor) \
            or state["conv1.weight"].ndim != 4 or state["conv1.weight"].shape[1] != 3:
        raise UserError(f"--weights {source} is not a torchvision ResNet-18 state dict (no 3-channel conv1.weight); "
                        "use torchvision's resnet18 ImageNet file")
    torchfile.check_finite(state, source, "ResNet-18 state dict")
    return state


class GrayResNet(ResNet):
    """torchvision's ResNet (same parameter names, so state dicts load either way) with a ``penultimate`` output."""

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Features after global average pooling, before ``fc`` (512-d for ResNet-18)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def gray_resnet18(n_classes: int = 2, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """ResNet-18 taking (n, 1, H, W) images in [-1, 1]; with ImageNet weights, conv1 folded to one channel."""
    model = GrayResNet(BasicBlock, [2, 2, 2, 2], num_classes=n_classes)
    conv = model.conv1
    model.conv1 = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=pretrained)
    if pretrained or weights:
        state = load_imagenet_state(weights)
        w = state.pop("conv1.weight")  # (64, 3, 7, 7), expects (rgb - mean) / std with rgb in [0, 1]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        source = weights or "the downloaded ImageNet weights"
        with torchfile.rebuilding(source, "ResNet-18 state dict"):
            missing, _ = model.load_state_dict(state, strict=False)
        missing = sorted(set(missing) - {"conv1.weight", "conv1.bias", "fc.weight", "fc.bias"})
        if missing:
            raise UserError(f"ResNet-18 state dict {source} lacks {len(missing)} of the network's weights (e.g. "
                            f"{missing[0]}); use torchvision's resnet18 ImageNet file")
        mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD)[None, :, None, None]
        # input x in [-1, 1]: rgb = (x + 1) / 2, so conv(rgb_norm) = sum_c w_c/(2 s_c) x + sum_c w_c (1/2 - m_c)/s_c
        with torch.no_grad():
            model.conv1.weight.copy_((w / (2 * std)).sum(dim=1, keepdim=True))
            model.conv1.bias = nn.Parameter((w * (0.5 - mean) / std).sum(dim=(1, 2, 3)), requires_grad=True)
    return model


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]  # (n_classes, pretrained, weights) -> network with .penultimate(x)
    title: str  # how reports name it


BACKBONES = {"resnet18": Backbone(gray_resnet18, "ResNet-18")}


def build(n_classes: int = 2, pretrained: bool = False, weights: str | None = None,
          arch: str = "resnet18") -> nn.Module:
    """The ``arch`` backbone for (n, 1, H, W) images in [-1, 1]; ``pretrained``/``weights``: ImageNet start."""
    if arch not in BACKBONES:
        raise UserError(f"unknown classifier architecture {arch!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[arch].build(n_classes, pretrained, weights)


def save(path, state: dict, classes: list[str], size: int, seed: int, arch: str = "resnet18",
         channels: int = 1) -> None:
    """A classifier checkpoint: the weights and what is needed to rebuild and feed the network."""
    torchfile.save({"format": FORMAT, "state": state, "classes": classes, "size": size, "seed": seed,
                    "arch": arch, "channels": channels}, path)


def load(path) -> tuple[nn.Module, dict]:
    """A train_resnet checkpoint (``model-seedN.pt``) -> (network in eval mode, its metadata: classes, size, seed,
    arch, channels). Checkpoints written before ``arch`` was recorded are ResNet-18s."""
    ckpt = torchfile.load(path, what="train_resnet checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a train_resnet checkpoint (format {FORMAT})")
    with torchfile.rebuilding(path, "train_resnet checkpoint"):
        state = ckpt["state"]
        meta = {"arch": "resnet18", "channels": 1, "size": 224, **{k: v for k, v in ckpt.items() if k != "state"}}
        torchfile.check_finite(state, path, "train_resnet checkpoint")
        model = build(len(meta["classes"]), arch=meta["arch"])
        for key in state.keys() - model.state_dict().keys():
            # a bias the fresh network lacks: trained from ImageNet weights, whose colour filters were folded into
            # a gray first convolution with a bias (see the module doc)
            module_name, _, param = key.rpartition(".")
            module = model.get_submodule(module_name)
            if param == "bias" and getattr(module, "bias", 0) is None:
                module.bias = nn.Parameter(torch.zeros_like(state[key]))
        model.load_state_dict(state)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    if first.in_channels != meta["channels"]:
        raise UserError(f"{path}: records {meta['channels']} input channels, but its {meta['arch']} takes "
                        f"{first.in_channels}; the file is inconsistent")
    return model.eval().requires_grad_(False), meta


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
