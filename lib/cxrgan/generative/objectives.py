"""The objectives a generative model trains on: one row each. A recipe's settings row names its objective
(``recipes.Adversarial``: adversarial, ``recipes.Denoising``: denoising).

An objective is an object with:

- ``name``; ``sampled``: the network part that makes images (an EMA of it, when the recipe keeps one, is sampled);
- ``loss_columns``: what its step reports, the columns of losses.csv after epoch, step and kimg (``img_per_s`` and
  ``seconds`` are the loop's);
- ``snapshot_columns``: what it adds to a metric snapshot's row (metrics.csv), and ``snapshot(snapshots, modules,
  fake, channels)`` computing them;
- ``latent(cfg, size)``: the latent size; ``model_extras(settings)``: what the checkpoint's model description adds;
- ``optimizers(cfg, modules)`` and ``learning_rates(cfg)``, keyed by network part;
- ``step(cfg, rt, modules, trained, optimizers, per_rank, state, model, settings)``: a callable ``(real, labels,
  step) -> {column: value}`` with ``state_dict()`` (what a checkpoint keeps of it, given back as ``state``);
- ``sampler(network, model, steps, guidance, solver, channels_last)``: ``(z, labels) -> images`` in [-1, 1], and
  ``sampler_record(...)``: what a samples file records of the sampler's settings (None: nothing);
  ``sample_options``: which of sample.py's ``SAMPLER_OPTIONS`` act on it (the others are refused, not ignored).

Its networks are the network family's parts (``networks.NETWORKS``). Adding an objective (e.g. flow matching) is a
row here, its module, and a settings class in ``recipes``.
"""

from __future__ import annotations

from .adversarial import AdversarialObjective
from .denoising import DenoisingObjective

OBJECTIVES = {"adversarial": AdversarialObjective(), "denoising": DenoisingObjective()}
