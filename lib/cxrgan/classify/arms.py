"""The control arms of train_resnet (``--control NAME``): one row each.

A control arm adds as many extra training images per class as the synthetic arm would add, re-drawn from the real
training images (with replacement, the same draw for every arm); its row says what then becomes of those copies,
how the report names the arm and what beating it means, and whether it is in the data-efficiency curve. train_resnet,
the report and the Makefile read this table (every arm is in `make all`'s default CONTROLS; ``laptop`` ones also in
DATA=nih-mini's, ``efficiency`` ones in `make efficiency`), so a new control arm is one row here. This module
imports nothing heavy: the Makefile reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Arm:
    make: Callable  # (re-drawn real copies, uint8 (n, H, W) numpy, and the training seed) -> the extra images
    display: str  # the report's name for the arm's training data
    verdict: str  # what a synthetic arm that beats this one beat ("beat oversampling")
    efficiency: bool = False  # also trained at every real fraction of `make efficiency`
    laptop: bool = False  # in DATA=nih-mini's default CONTROLS (the laptop run keeps to the cheapest arms)
    help: str = ""  # for train_resnet --help


def _as_drawn(copies, seed: int):
    return copies


def _augmented(copies, seed: int):
    """Each copy moved once by the classical augmentation (small rotation, scale, shift, brightness, contrast;
    never a flip), with its own generator."""
    import torch  # here, not above: the Makefile reads this table without torch

    from ..data.reader import to_model_input
    from .model import augment

    gen = torch.Generator().manual_seed(seed + 104729)
    x = augment(to_model_input(torch.from_numpy(copies)), gen)
    return ((x.squeeze(1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


ARMS: dict[str, Arm] = {
    "oversample": Arm(_as_drawn, "real + oversampled real copies", "oversampling", efficiency=True, laptop=True,
                      help="re-drawn real training images"),
    "augment": Arm(_augmented, "real + augmented real copies", "classical augmentation",
                   help="classically augmented real copies (small affine, brightness/contrast; never flips)"),
}


def help_text() -> str:
    """train_resnet's help for --control: every arm with what it adds."""
    return "; ".join(f'"{name}" {arm.help or arm.display}' for name, arm in ARMS.items())


def make_table() -> str:
    """For the Makefile: ``NAME[:efficiency][:laptop]`` for every arm, space-separated."""
    return " ".join(name + ":efficiency" * arm.efficiency + ":laptop" * arm.laptop for name, arm in ARMS.items())
