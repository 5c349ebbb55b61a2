"""cxrgan: synthetic chest X-rays with GANs, and an honest evaluation of whether they help.

Sub-packages follow the pipeline's stages (``data``, ``gan``, ``classify``, ``metrics``), with the few shared
modules at the top; the tools in ``tools/`` are thin command-line fronts over them (README, "Where things are").
Importing the package is cheap: nothing here imports torch until a module that needs it is imported.
"""

__version__ = "0.1.0"
