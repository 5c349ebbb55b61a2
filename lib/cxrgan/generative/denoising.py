"""The denoising objective (diffusion models): one denoiser trained on its formulation's loss
(``generative.diffusion.FORMULATIONS``), and sampled by integrating the probability-flow ODE from noise.

A diffusion model's latent is its starting noise, one value per pixel, so sample.py's seeded latents give the same
images every time, as a GAN's do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from . import diffusion


class DenoisingStep:
    """One update of the denoiser on its formulation's loss, labels dropped to "no class" at the recipe's
    ``p_uncond`` (classifier-free guidance)."""

    def __init__(self, cfg, rt, model: dict, settings, trained: dict, optimizers: dict):
        self.rt, self.denoiser, self.opt = rt, trained["denoiser"], optimizers["denoiser"]
        self.loss = diffusion.FORMULATIONS[model["formulation"]].loss
        self.n_classes, self.p_uncond = model["n_classes"], settings.p_uncond

    def state_dict(self) -> dict:
        return {}

    def __call__(self, real: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        with self.rt.autocast():
            loss = self.loss(self.denoiser, real, y, self.n_classes, self.p_uncond)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = loss.detach().reshape(1)
        if self.rt.world > 1:
            dist.all_reduce(value)
            value /= self.rt.world
        return {"loss": value.item()}


class DenoisingObjective:
    name = "denoising"
    sampled = "denoiser"
    loss_columns = ("loss", "img_per_s", "seconds")
    snapshot_columns = ()
    sample_options = ("steps", "guidance", "solver")  # sample.py's options that act on a diffusion sampler

    def latent(self, cfg, size: int) -> int:
        return size * size * cfg.channels

    def model_extras(self, settings) -> dict:
        return {"formulation": settings.formulation}

    def optimizers(self, cfg, modules: dict) -> dict[str, torch.optim.Optimizer]:
        return {"denoiser": torch.optim.Adam(modules["denoiser"].parameters(), lr=cfg.lr_g,
                                             betas=(cfg.beta1, cfg.beta2))}

    def learning_rates(self, cfg) -> dict[str, float]:
        return {"denoiser": cfg.lr_g}

    def step(self, cfg, rt, modules: dict, trained: dict, optimizers: dict, per_rank: int, state: dict | None,
             model: dict, settings):
        return DenoisingStep(cfg, rt, model, settings, trained, optimizers)

    def sampler(self, network: torch.nn.Module, model: dict, steps: int | None = None, guidance: float = 1.0,
                solver: str | None = None, channels_last: bool = False):
        """(z, labels) -> images by the formulation's sampler: ``steps`` (None: its grid steps, for training-time
        grids and snapshots), classifier-free ``guidance``, ``solver`` (None: its own). ``channels_last`` (for
        sampling on a CPU) converts ``network`` to that layout, about 1.5x faster there at inference."""
        f = diffusion.FORMULATIONS[model["formulation"]]
        steps = f.grid_steps if steps is None else steps
        shape = (model["channels"], model["size"], model["size"])
        if channels_last:
            network.to(memory_format=torch.channels_last)

        def sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            noise = z.reshape(len(z), *shape)
            if channels_last:
                noise = noise.contiguous(memory_format=torch.channels_last)
            return diffusion.sample(model["formulation"], network, noise, y, steps, guidance, solver)
        return sample

    def sampler_record(self, network, model: dict, steps: int | None, guidance: float, solver: str | None):
        """What a samples file records of how it was sampled."""
        f = diffusion.FORMULATIONS[model["formulation"]]
        return {"steps": f.grid_steps if steps is None else steps, "guidance": float(guidance),
                "solver": solver or f.solver}

    def snapshot(self, snapshots, modules: dict, fake: np.ndarray, channels: int) -> dict:
        return {}
