#!/usr/bin/env python3
"""Train ResNet-18 on real (and optionally synthetic) chest X-rays; evaluate on real test images with CIs."""

import textwrap

from cxrgan import cli
from cxrgan.classify import arms
from cxrgan.classify.model import BACKBONES
from cxrgan.classify.train import ClassifierConfig, markdown, run


def train_resnet(cfg: ClassifierConfig, call_args: dict):
    """Train a 2-class ResNet-18 (or another --arch) K times (--seeds) and write OUT/metrics.json, metrics.md,
    predictions.npz and model-seedN.pt.

    Model selection and early stopping use the real val split only; synthetic images are used for training
    only and never enter validation or test. Gray input: ResNet-18's first convolution takes one channel (with
    --pretrained, ImageNet's RGB filters are folded into it). Augmentation: small rotation, scale, shift,
    brightness, contrast; never flips. metrics.json: accuracy, balanced_accuracy, auroc, sensitivity,
    specificity (means over seeds), each with <key>_ci95 (with two or more seeds, seed-aware: it holds for the
    training method, counting both the spread between training runs and the choice of test images),
    <key>_ci95_test_images_only (bootstrap over test images, these models held fixed) and <key>_sd (over
    seeds), plus per_seed and n_test; with --baseline DIR, "paired": this run against that run on the same
    test images (ΔAUROC with a seed-aware CI and p-value, the test-images-only ones beside them, and exact
    McNemar on the accuracy of the seed-averaged predictions).

    Args:
        data: dataset file; its train split trains, its val split selects, its test split tests (unless --test).
        out: output folder (default outputs/classify/real).
        synthetic: samples file (tools/sample.py) added to the training data.
        synthetic_only: train on synthetic images only, test on real (TSTR); without a ratio or count, as many
            synthetic images as possible at the real training split's class ratio.
        synthetic_ratio: synthetic images per real training image, per class (default 1).
        synthetic_per_class: a fixed number of synthetic images per class instead.
        control: a control arm instead of synthetic images, adding as many images as --synthetic would add
            (--synthetic-ratio, --synthetic-per-class); the arms of lib/cxrgan/classify/arms.py:
            {arms}.
        synthetic_mode: how the synthetic images train: mix (default: added to the real ones) or pretrain (the
            network trains on them alone first, --pretrain-epochs, its last epoch kept; then fine-tunes on the real
            images with the usual selection).
        pretrain_epochs: epochs of synthetic pretraining (default --epochs; --synthetic-mode pretrain only).
        real_fraction: keep a patient-level fraction of the real train split (low-data regime); the same patients
            for every seed, and smaller fractions nested in larger ones.
        subset_seed: which patients --real-fraction keeps.
        test: external test set FILE.h5[:split] (default: --data's test split).
        test_extra: more test sets, FILE.h5[:split] each (default split test; make_hdf5 --fractions 0,0,1 builds a
            file whose every image is in test): every seed's best model is evaluated on each too (metrics.json
            "extra_tests", and "extra" in each comparison where the baseline has the same images). Repeatable:
            --test-extra a.h5 --test-extra b.h5:test (or comma-separated). Refused if its image size or classes
            differ from --data's, it lacks a class, or it shares a patient or an image with training/validation.
        epochs: most epochs per seed (early stopping on val AUROC, --patience).
        seeds: independent trainings (seeds SEED, SEED+1, ...).
        seed: first seed.
        size: input size (default 224, as in the study).
        batch: batch size.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: epochs without a better validation score before stopping (--select auroc or loss).
        select: which epoch is kept: auroc (best val AUROC, the default), loss (lowest val cross-entropy) or last
            (every epoch trained, no early stopping): selection on a small val split adds spread between seeds.
        schedule: learning rate: constant (default) or cosine (decay to 0 over --epochs).
        ema: decay per step of an exponential moving average of the weights (0, the default: none; 0.99 averages
            about the last 100 steps); the average is what is validated, kept and tested.
        augment: augmentation without flips (default on; --noaugment).
        arch: the network, a row of BACKBONES (lib/cxrgan/classify/model.py): {backbones}; default resnet18.
        pretrained: start from ImageNet weights (downloaded and cached; --weights PATH offline).
        weights: a torchvision ResNet-18 state-dict file (implies --pretrained).
        baseline: a previous run's folder to compare with on the same test images, or several comma-separated
            (metrics.json "comparisons"; the first is also "paired"): e.g. real,real+oversample,real+augment.
        n_boot: bootstrap resamples for the confidence intervals.
        device: auto, cpu, cuda or cuda:N.
        overwrite: replace the results of an earlier run in --out (default off: such a run is refused).
    """
    with cli.progress_bars() as progress:
        summary = run(cfg, call_args, progress)
    cli.console.print(markdown(summary))


# the arms and networks come from their tables (a new row shows up here)
train_resnet.__doc__ = train_resnet.__doc__.replace("{arms}", textwrap.fill(
    arms.help_text(), 108, subsequent_indent=" " * 12, break_on_hyphens=False).lstrip()).replace(
    "{backbones}", ", ".join(f"{name} ({b.title})" for name, b in BACKBONES.items()))
main = cli.command(ClassifierConfig, train_resnet)

if __name__ == "__main__":
    cli.run(main, name="train_resnet.py")
