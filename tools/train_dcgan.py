#!/usr/bin/env python3
"""Train a GAN on the train split of a cxrgan dataset: the reference study's DCGAN or the improved recipe."""

from cxrgan import cli
from cxrgan.gan.train import GanConfig, train


def train_dcgan(cfg: GanConfig, call_args: dict):
    """Train a GAN and write checkpoints, fixed-noise grids and loss curves to --out.

    Recipes: "seed" is the reference study, faithfully: DCGAN, latent 100, 64 base filters, BCE, Adam lr_G 2e-4 /
    lr_D 1e-4, betas (0.5, 0.999), the generator stepped twice per discriminator step, batch 32, 20 epochs, one
    model per class (--cls). "improved" (default) is one class-conditional model for all classes: projection
    discriminator with spectral norm, hinge loss, differentiable augmentation of real and fake images
    (translation, cutout, brightness, contrast; never flips), and an EMA of the generator used for sampling.
    "limited" (for a few hundred images; provisional until its ablation is measured) is one class-conditional
    model with residual networks (minibatch standard deviation in D), adaptive augmentation, LeCam, a 5 kimg EMA
    and a length of 150 kimg. The table is lib/cxrgan/gan/recipes.py. Any option below left unset takes the
    recipe's value. Each epoch writes ckpt-EEEEEE.pt (keeping --keep), last.pt, grid-EEEEEE.png, losses.csv and
    losses.png (grids and plots every --ckpt-every epochs). An interrupted run continues from last.pt.
    Multi-GPU / multi-process: torchrun --nproc_per_node=N tools/train_dcgan.py ... (--batch is the global batch).

    Args:
        data: dataset file (tools/make_hdf5.py or tools/make_phantoms.py); its train split is used.
        out: folder for checkpoints and figures (default outputs/gan).
        recipe: improved (default), seed or limited (lib/cxrgan/gan/recipes.py).
        cls: with --recipe seed, the class this model learns (0 No Finding, 1 Infiltration).
        real_fraction: train on a patient-level fraction of the train split (the low-data regime; the same
            patients as train_resnet --real-fraction with the same --subset-seed, so a GAN per fraction sees only
            that fraction's images).
        subset_seed: which patients --real-fraction keeps.
        epochs: epochs in total, counting resumed ones (recipe default 20; or give --kimg).
        batch: global batch size (default 32).
        seed: seed of weights, data order, noise and augmentation.
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        resume: continue from OUT/last.pt if present (default); --noresume starts over.
        overwrite: allow starting over in an OUT that holds an earlier run, deleting its checkpoints and history
            (without it such a run is refused, so nothing is lost by accident).
        channels: 1 (gray, default) or 3 (gray replicated to RGB, as in the study).
        latent: latent dimension (default 100).
        base: base filter count of both networks (64 in every recipe).
        lr_g: generator learning rate (seed 2e-4, improved 4e-4).
        lr_d: discriminator learning rate (seed 1e-4, improved 4e-4).
        beta1: Adam beta1 (seed 0.5, improved 0.0).
        beta2: Adam beta2 (seed 0.999, improved 0.99).
        g_steps: generator steps per discriminator step (seed 2, improved 1).
        loss: bce (seed) or hinge (improved).
        augment: DiffAugment policy, comma-separated from translation,cutout,brightness,contrast, or none.
        ema_kimg: half-life of the generator's EMA in thousands of images; 0 disables (seed 0, improved 1).
        ckpt_every: write ckpt-EEEEEE.pt, the grid and losses.png every this many epochs (last.pt is written
            every epoch); raise it for long runs on small datasets, where an epoch takes seconds.
        keep: how many ckpt-EEEEEE.pt to keep (default 3).
        grid: fixed-noise images per class in each grid PNG (default 16).
        compile: torch.compile the networks (CUDA).
        kimg: training length in thousands of real images shown to D, counting resumed ones, instead of --epochs
            (rounded up to whole epochs; a 300-image dataset then gets the thousands of steps a GAN needs).
        snapshot_kimg: every this many kimg (and at the end), sample --snapshot-n images and append KID, precision,
            recall, pixel diversity against the validation split and the discriminator's view of training,
            validation and generated images to OUT/metrics.csv (plotted in metrics.png); 0 (default) disables.
        snapshot_n: generated images per snapshot, with the validation split's class mix (default 500).
        snapshot_features: classifier:CKPT (a train_resnet model: chest X-ray features) or inception, for the KID
            and precision/recall columns; default none (pixel and discriminator columns only).
        select_snapshot: keep the snapshot with the lowest validation KID as OUT/best.pt, which sample.py prefers
            (needs --snapshot-kimg and --snapshot-features).
        ada_target: adaptive discriminator augmentation: tune the probability p of each transform (translation,
            scale, rotation, brightness, contrast, cutout; never flips) so that the share of real images D scores
            positive stays near this (ADA: 0.6); p is logged as augment_p in losses.csv; 0 turns it off
            (limited 0.6, others off).
        ada_kimg: p can move from 0 to 1 within this many thousand images (limited 100).
        r1_gamma: weight of the R1 gradient penalty on real images, applied every 16 D steps (default off).
        lecam: weight of the LeCam regulariser (limited 0.3, others off).
    """
    with cli.progress_bars() as progress:
        result = train(cfg, call_args, progress)
    if result["trained"]:
        cli.console.print(f"trained to epoch {result['epochs']} ({result['step']} steps, {result['kimg']:.1f}k images) "
                          f"in {result['seconds']:.0f}s, {result['img_per_s']:,.1f} img/s; checkpoints in {result['out']}")


main = cli.command(GanConfig, train_dcgan)

if __name__ == "__main__":
    cli.run(main, name="train_dcgan.py")
