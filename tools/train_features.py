#!/usr/bin/env python3
"""Train the chest X-ray feature network of the image metrics (fid_is --features cxr:PATH) on real radiographs."""

from cxrgan import cli
from cxrgan.metrics.cxr import FINDINGS
from cxrgan.metrics.cxr_train import FeaturesConfig, run


def train_features(cfg: FeaturesConfig, call_args: dict):
    """Train a small CNN multi-label over NIH's 14 findings ("No Finding": none) on every real radiograph given, and
    write OUT (a cxrgan-cxr-features/1 checkpoint: its 256-d penultimate layer is fid_is's --features cxr:OUT) and
    OUT with .json (what it trained on, the loss and validation macro-AUROC per epoch).

    The recipe (make features): the main dataset's training split plus radiographs with other findings that are
    in no test set (make_hdf5 --other-findings). Never train it on an image of a test or validation set: such
    splits are refused unless --allow-held-out. Targets: each file's findings field (make_hdf5 stores the csv's
    Finding Labels), else its class labels. The findings: {findings}.

    Args:
        data: real images FILE.h5[:split] (default split train), comma-separated or --data repeated.
        out: the checkpoint to write (default outputs/features/cxr.pt).
        epochs: training epochs (default 20); the epoch with the lowest validation loss is the one saved.
        seed: seed of the initialisation, the held-out patients and the batch order.
        batch: images per step (default 64).
        lr: AdamW learning rate, cosine-annealed to 0 (default 1e-3).
        weight_decay: AdamW weight decay (default 1e-4).
        width: channels of the first block; the features are 8 x width wide (default 32: 256-d).
        val_fraction: patient-level share of the given images held out to report the validation loss and
            macro-AUROC over findings each epoch and to pick the saved epoch (default 0.1; 0: train on all, save the
            last epoch).
        augment: rotation, scale, shift, brightness and contrast, never flips (default on; --noaugment).
        allow_held_out: accept splits named test or val (default off: refused).
        device: auto, cpu, cuda or cuda:N.
        overwrite: replace an existing --out.
    """
    with cli.progress_bars(unit="epoch/s") as progress:
        run(cfg, call_args, progress)


train_features.__doc__ = train_features.__doc__.replace("{findings}", ", ".join(FINDINGS))
main = cli.command(FeaturesConfig, train_features)

if __name__ == "__main__":
    cli.run(main, name="train_features.py")
