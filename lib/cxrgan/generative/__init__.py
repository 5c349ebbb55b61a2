"""Stage 2, generative models (GANs and diffusion): the recipe table, networks, augmentation, the training loop,
checkpoints and sampling.

Importing this package (or ``generative.recipes``) does not import torch: the Makefile reads the recipe table cheaply.
"""
