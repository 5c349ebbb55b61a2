"""cxrgan: synthetic chest X-rays with GANs, and an honest evaluation of whether they help.

One module per concern; the tools in ``tools/`` are thin command-line fronts over these.
Importing the package is cheap: nothing here imports torch until a module that needs it is imported.
"""

__version__ = "0.1.0"
