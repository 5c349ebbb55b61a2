"""A chest X-ray feature network of the project's own (fid_is ``--features cxr:PATH``): a small CNN for one-channel
radiographs at 64x64 (other sizes are resized), trained multi-label over NIH ChestX-ray14's 14 findings ("No
Finding" is all zeros) by ``tools/train_features.py`` on real radiographs that are in no test set. Its pooled
penultimate layer (256-d) is the feature space; its logits score the 14 findings.

Checkpoint ``cxrgan-cxr-features/1`` (a ``torchfile``: tensors and plain values only, digest-checked): ``state``,
``findings`` (the logits' order), ``size``, ``width``, ``trained_on`` (one ``{path, split, content_sha256, n,
findings}`` per input), ``history`` (per epoch: loss, validation loss and macro-AUROC), ``kept_epoch`` (the
saved one: lowest validation loss), ``config``, ``args``, ``seed``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import torchfile
from ..classify.model import resize
from ..data.reader import to_model_input
from ..errors import UserError
from ..fileio import sha256_file

FORMAT = "cxrgan-cxr-features/1"
WHAT = "cxr feature network"
INPUT_SIZE = 64
NO_FINDING = "No Finding"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU, then halve the resolution."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class CXRNet(nn.Module):
    """(n, 1, H, W) in [-1, 1] -> logits (n, n_findings); ``features`` gives the pooled penultimate layer."""

    def __init__(self, n_findings: int = len(FINDINGS), width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(_block(1, width), _block(width, 2 * width), _block(2 * width, 4 * width),
                                   _block(4 * width, 8 * width))
        self.head = nn.Linear(8 * width, n_findings)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def targets(findings: list[str], where: str = "") -> torch.Tensor:
    """NIH "Finding Labels" strings (``Effusion|Infiltration``, ``No Finding``) -> float (n, 14) multi-hot."""
    index = {f: k for k, f in enumerate(FINDINGS)}
    out = torch.zeros(len(findings), len(FINDINGS))
    for i, text in enumerate(findings):
        for name in (s.strip() for s in str(text).split("|")):
            if name in index:
                out[i, index[name]] = 1
            elif name != NO_FINDING:
                raise UserError(f"{where}: finding {name!r} of image {i} is not one of NIH's 14 ({', '.join(FINDINGS)})"
                                " or No Finding; fix the file's findings or its csv")
    return out


def save(path, model: CXRNet, size: int, **record) -> None:
    """``record``: trained_on, history, config, args, seed (plain values)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torchfile.save({"format": FORMAT, "state": state, "findings": list(FINDINGS), "size": int(size),
                    "width": int(model.head.in_features // 8), **record}, path)


def load(path) -> tuple[CXRNet, dict]:
    """A ``train_features`` checkpoint -> (network in eval mode, its record without the weights)."""
    ckpt = torchfile.load(path, what=WHAT)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a {WHAT} (format {FORMAT}); make one with tools/train_features.py")
    with torchfile.rebuilding(path, WHAT):
        meta = {k: v for k, v in ckpt.items() if k != "state"}
        if list(meta["findings"]) != list(FINDINGS):
            raise UserError(f"{path}: its findings {meta['findings']} are not NIH's 14 in cxrgan's order; retrain it "
                            "with this cxrgan's tools/train_features.py")
        torchfile.check_finite(ckpt["state"], path, WHAT)
        model = CXRNet(len(FINDINGS), int(meta["width"]))
        model.load_state_dict(ckpt["state"])
        int(meta["size"])
    return model.eval().requires_grad_(False), meta


class _Features(nn.Module):
    def __init__(self, model: CXRNet):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def feature_backbone(argument: str, weights: str | None, device) -> tuple:
    """The ``cxr:PATH`` row of ``networks.FEATURE_NETS`` (``weights``, Inception's, is not used)."""
    model, meta = load(argument)
    size = int(meta["size"])

    def prepare(x):
        return resize(to_model_input(x), size)

    dim = model.head.in_features
    return (_Features(model).to(device).eval(), sha256_file(argument)[:16], prepare,
            f"cxrgan CXR CNN penultimate layer, {dim}-d, trained on {len(FINDINGS)} NIH findings ({argument}, input "
            f"{size}x{size})")
