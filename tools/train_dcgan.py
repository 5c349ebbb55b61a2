#!/usr/bin/env python3
"""Train a GAN (or a diffusion recipe) on the train split of a cxrgan dataset."""

from cxrgan import cli
from cxrgan.generative.train import OPTIONS_HELP, GanConfig, result_line, train


def train_dcgan(cfg: GanConfig, call_args: dict):
    """Train a GAN and write checkpoints, fixed-noise grids and loss curves to --out.

    Recipes (lib/cxrgan/generative/recipes.py; any option below left unset takes the recipe's value): "study-dcgan"
    (formerly "seed", still accepted) is the reference study, faithfully: DCGAN, latent 100, 64 base filters, BCE,
    Adam lr_G 2e-4 / lr_D 1e-4, betas (0.5, 0.999), the generator stepped twice per discriminator step, batch 32, 20
    epochs, one model per class (--cls). "improved" is one class-conditional model for all classes: projection
    discriminator with spectral norm, hinge loss, differentiable augmentation of real and fake images (translation,
    cutout, brightness, contrast; never flips), and an EMA of the generator used for sampling. "limited" (default;
    for a few hundred images) is the same networks with adaptive augmentation, LeCam, a 5 kimg EMA and a length of
    150 kimg. "diffusion" (EDM) and "diffusion-ddpm" (DDPM, sampled by DDIM) are not GANs but denoising diffusion
    models trained by the same loop (tools/train_diffusion.py says more). Each epoch writes ckpt-EEEEEE.pt (keeping
    --keep), last.pt, grid-EEEEEE.png, losses.csv and losses.png (grids and plots every --ckpt-every epochs). An
    interrupted run continues from the newest checkpoint that loads (last.pt, or a later ckpt-EEEEEE.pt). Multi-GPU
    / multi-process: torchrun --nproc_per_node=N tools/train_dcgan.py ... (--batch is the global batch).
    """
    with cli.progress_bars() as progress:
        result = train(cfg, call_args, progress)
    if result["trained"]:
        cli.console.print(result_line(result))


train_dcgan.__doc__ += OPTIONS_HELP
main = cli.command(GanConfig, train_dcgan)

if __name__ == "__main__":
    cli.run(main, name="train_dcgan.py")
