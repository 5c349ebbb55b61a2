"""The feature networks of the image-set metrics (fid_is ``--features NAME[:ARGUMENT]``): one row each, as
torch-fidelity registers its feature extractors.

A row says how to build the network (a function in the network's own module, imported only when it is built),
whether it has ImageNet logits (the Inception Score), what may follow ``NAME:`` and what it is. ``feature_net``
(``features.py``) looks the name up here; fid_is's help, its errors and the Makefile's per-network metrics targets
(``make metrics NAME=1`` writes ``metrics/NAME-RECIPE.json``; for a network with a ``built`` file, ``make features``
makes it and ``make metrics NAME=1`` uses it unless ``NAME_WEIGHTS`` names another) all come from this table, so a
new network is one row and its module. This module imports nothing heavy: the Makefile reads it without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FeatureNetRow:
    # (argument after "NAME:" or "", fid_is --inception-weights, torch.device) -> (network, weights id for the
    # feature cache, prepare: uint8 (n, H, W) on the device -> network input, description of what was loaded).
    # A network with logits returns (features, logits) from its forward, else features.
    build: Callable
    has_logits: bool  # ImageNet logits beside the features: the Inception Score
    description: str  # for fid_is --help (no colon: python-fire's help would take it for a new option)
    argument: str = ""  # what may follow "NAME:", as the help names it ("" : nothing)
    argument_required: bool = False  # True: the network cannot be built without it (no make target of its own)
    weights_option: str = ""  # the fid_is option that takes the Makefile's NAME_WEIGHTS ("": "NAME:WEIGHTS")
    built: str = ""  # the file under the Makefile's OUTPUTS that `make features` trains: its argument by default

    def usage(self, name: str) -> str:
        if not self.argument:
            return name
        return f"{name}:{self.argument}" if self.argument_required else f"{name}[:{self.argument}]"


def _lazy(module: str, function: str) -> Callable:
    """``function`` of ``cxrgan.metrics.<module>``, imported when first called (the table is read without torch)."""
    def build(*args):
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(*args)

    return build


FEATURE_NETS: dict[str, FeatureNetRow] = {
    "inception": FeatureNetRow(_lazy("inception", "feature_backbone"), True,
                               "the standard FID Inception with the TF 2015-12-05 weights, "
                               "from --inception-weights or downloaded once", weights_option="--inception-weights"),
    "xrv": FeatureNetRow(_lazy("xrv", "feature_backbone"), False,
                         "torchxrayvision's chest X-ray DenseNet-121, densenet121-res224-all, the FID_xrv of the CXR "
                         "literature; weights downloaded once and cached, or a local file, pickled model or state dict",
                         argument="WEIGHTS"),
    "classifier": FeatureNetRow(_lazy("features", "classifier_backbone"), False,
                                "penultimate layer of a train_resnet model, a chest-X-ray FID/KID that needs no "
                                "download; no IS", argument="PATH/TO/model-seedN.pt", argument_required=True),
    "cxr": FeatureNetRow(_lazy("cxr", "feature_backbone"), False,
                         "penultimate layer (256-d) of cxrgan's chest X-ray CNN trained over NIH's 14 findings on real "
                         "radiographs in no test set (tools/train_features.py, make features); no IS",
                         argument="PATH/TO/cxr.pt", argument_required=True, built="features/cxr.pt"),
}


def usages() -> str:
    """Every network as ``--features`` takes it, for errors: ``inception, xrv[:WEIGHTS] or classifier:CKPT``."""
    names = [row.usage(name) for name, row in FEATURE_NETS.items()]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def help_text() -> str:
    """fid_is's help for --features: one entry per row."""
    return "; ".join(f"{row.usage(name)} ({row.description})" for name, row in FEATURE_NETS.items())


def make_table() -> str:
    """For the Makefile: ``NAME:VAR[:OPTION[:BUILT]]`` for every network that runs without an argument or that
    ``make features`` builds, space-separated (OPTION ``-``: none). ``make metrics VAR=1`` adds
    ``metrics/NAME-RECIPE.json``; ``VAR_WEIGHTS`` goes to OPTION, or after ``NAME:``; without it, a BUILT network
    uses ``OUTPUTS/BUILT``."""
    def row_text(name: str, row: FeatureNetRow) -> str:
        fields = [name, name.upper().replace("-", "_"), row.weights_option or ("-" if row.built else ""), row.built]
        return ":".join(f for f in fields if f)

    return " ".join(row_text(name, row) for name, row in FEATURE_NETS.items()
                    if not row.argument_required or row.built)


def argument_file(spec: str) -> str | None:
    """The file a ``--features NAME:PATH`` spec reads (for the checks on a run's inputs), or None."""
    name, _, argument = str(spec or "").partition(":")
    return argument or None if name in FEATURE_NETS and FEATURE_NETS[name].argument else None
