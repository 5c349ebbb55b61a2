#!/usr/bin/env python3
"""Train ResNet-18 on real (and optionally synthetic) chest X-rays; evaluate on real test images with CIs."""

from cxrgan import cli
from cxrgan.clftrain import ClfConfig, run


def train_resnet(data: str, out: str = "outputs/classify/real", synthetic: str = None, synthetic_only: bool = False,
                 synthetic_ratio: float = None, synthetic_per_class: int = None, real_fraction: float = 1.0,
                 test: str = None, epochs: int = 20, seeds: int = 1, seed: int = 0, size: int = 224, batch: int = 32,
                 lr: float = 3e-4, weight_decay: float = 1e-4, patience: int = 5, augment: bool = True,
                 pretrained: bool = False, weights: str = None, baseline: str = None, n_boot: int = 1000,
                 device: str = "auto"):
    """Train a 2-class ResNet-18 K times (--seeds) and write OUT/metrics.json, metrics.md, predictions.npz and
    model-seedN.pt.

    Model selection and early stopping use the real val split only; synthetic images are used for training
    only and never enter validation or test. Gray input: ResNet-18's first convolution takes one channel (with
    --pretrained, ImageNet's RGB filters are folded into it). Augmentation: small rotation, scale, shift,
    brightness, contrast; never flips. metrics.json: accuracy, balanced_accuracy, auroc, sensitivity,
    specificity (means over seeds), each with <key>_ci95 (bootstrap over test images of the mean over seeds)
    and <key>_sd (over seeds), plus per_seed and n_test; with --baseline DIR, "paired": this run against
    that run on the same test images (paired bootstrap of ΔAUROC, exact McNemar on accuracy).

    Args:
        data: dataset file; its train split trains, its val split selects, its test split tests (unless --test).
        out: output folder (default outputs/classify/real).
        synthetic: samples file (tools/sample.py) added to the training data.
        synthetic_only: train on synthetic images only, test on real (TSTR).
        synthetic_ratio: synthetic images per real training image, per class (default 1).
        synthetic_per_class: a fixed number of synthetic images per class instead.
        real_fraction: keep a seeded, patient-level fraction of the real train split (low-data regime).
        test: external test set FILE.h5[:split] (default: --data's test split).
        epochs: most epochs per seed (early stopping on val AUROC, --patience).
        seeds: independent trainings (seeds SEED, SEED+1, ...).
        seed: first seed.
        size: input size (default 224, as in the study).
        batch: batch size.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: epochs without a better val AUROC before stopping.
        augment: augmentation without flips (default on; --noaugment).
        pretrained: start from ImageNet weights (downloaded and cached; --weights PATH offline).
        weights: a torchvision ResNet-18 state-dict file (implies --pretrained).
        baseline: a previous run's folder to compare with on the same test images.
        n_boot: bootstrap resamples for the confidence intervals.
        device: auto, cpu, cuda or cuda:N.
    """
    call_args = dict(locals())
    cfg = ClfConfig(**call_args)
    with cli.progress_info() as bar:
        task = bar.add_task("seeds", total=seeds, info="", visible=False)  # shown once the inputs have loaded
        summary = run(cfg, call_args, on_start=lambda: bar.update(task, visible=True), on_seed=lambda r: bar.update(
            task, advance=1, info=f"seed {r['seed']}: AUROC {r['auroc']:.3f} (best epoch {r['best_epoch']})"))
    from cxrgan.clftrain import markdown
    cli.console.print(markdown(summary))


if __name__ == "__main__":
    cli.run(train_resnet, name="train_resnet.py")
