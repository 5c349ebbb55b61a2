#!/usr/bin/env python3
"""Train the diffusion recipe: a class-conditional denoising diffusion model, by train_dcgan's loop."""

from dataclasses import dataclass

from cxrgan import cli
from cxrgan.generative.train import OPTIONS_HELP, GanConfig, result_line, train


@dataclass
class DiffusionConfig(GanConfig):
    """train_dcgan's options with the diffusion recipe as the default."""

    out: str = "outputs/gan/diffusion"
    recipe: str = "diffusion"


def train_diffusion(cfg: DiffusionConfig, call_args: dict):
    """Train a class-conditional diffusion model and write checkpoints, fixed-noise grids and loss curves to --out.

    The model (lib/cxrgan/generative/unet.py, diffusion.py): a compact U-Net (residual blocks, attention at 16x16
    and below, noise-level and class embeddings) in EDM's preconditioning (Karras et al. 2022), trained on EDM's
    weighted denoising loss with 10% of the labels dropped for classifier-free guidance, and an EMA of its weights
    used for sampling. No augmentation (it would be learnt as part of the images; never flips). Sampling (sample.py,
    --steps, --guidance) uses EDM's deterministic Heun sampler: one seed, the same images. Everything else is
    train_dcgan's: the --kimg budget (the recipe's default 100 kimg), atomic resumable checkpoints in the same
    format, fixed-noise grids, losses.csv (the denoising loss in its loss column), metric snapshots,
    --real-fraction, bf16 autocast and channels-last on CUDA, torchrun. Options that only GANs have (lr_d, g_steps,
    loss, augment, ada_*, r1_gamma, lecam) are refused; --lr-g is the denoiser's learning rate. --recipe
    diffusion-ddpm trains the same U-Net as a DDPM instead (epsilon-prediction, 1,000 linear-beta timesteps, the
    plain epsilon loss), sampled by deterministic DDIM with one network call per --steps: the alternative EDM was
    measured against (docs/benchmarks.md).
    """
    with cli.progress_bars() as progress:
        result = train(cfg, call_args, progress)
    if result["trained"]:
        cli.console.print(result_line(result))


train_diffusion.__doc__ += OPTIONS_HELP
main = cli.command(DiffusionConfig, train_diffusion)

if __name__ == "__main__":
    cli.run(main, name="train_diffusion.py")
