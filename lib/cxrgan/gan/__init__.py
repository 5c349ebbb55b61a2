"""Stage 2, GANs: the recipe table, networks, augmentation, the training loop, checkpoints and sampling.

Importing this package (or ``gan.recipes``) does not import torch: the Makefile reads the recipe table cheaply.
"""
