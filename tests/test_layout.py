"""The package's layout keeps stages apart: what a module imports is what its stage needs."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module,never", [
    ("cxrgan.generative.sample", {"cxrgan.generative.train"}),  # sampling needs the networks and checkpoints, not the trainer
    ("cxrgan.classify.train", {"cxrgan.generative", "cxrgan.metrics"}),  # the classifier knows nothing of GANs
    ("cxrgan.metrics.evaluate", {"cxrgan.generative", "cxrgan.classify.train"}),
    ("cxrgan.data.ingest", {"torch", "cxrgan.generative", "cxrgan.classify", "cxrgan.metrics"}),
    ("cxrgan.generative.recipes", {"torch", "numpy"}),  # the Makefile reads the recipe table with the system python
])
def test_stages_import_only_what_they_need(module, never):
    loaded = _imported_after(module)
    assert not {m for m in loaded for n in never if m == n or m.startswith(n + ".")}
