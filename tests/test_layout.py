"""The package's layout keeps stages apart: what a module imports is what its stage needs."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module,never", [
    # sampling needs the networks and checkpoints, not the trainer
    ("cxrgan.generative.sample", {"cxrgan.generative.train", "cxrgan.generative.config"}),
    # networks apart from what trains and samples them (as edm's networks.py beside its generate.py)
    ("cxrgan.generative.networks", {"cxrgan.generative.diffusion", "cxrgan.generative.adversarial",
                                    "cxrgan.generative.objectives"}),
    ("cxrgan.classify.train", {"cxrgan.generative", "cxrgan.metrics"}),  # the classifier knows nothing of GANs
    ("cxrgan.metrics.evaluate", {"cxrgan.generative", "cxrgan.classify.train"}),
    ("cxrgan.data.ingest", {"torch", "cxrgan.generative", "cxrgan.classify", "cxrgan.metrics"}),
    ("cxrgan.generative.recipes", {"torch", "numpy"}),  # the Makefile reads the recipe table with the system python
])
def test_stages_import_only_what_they_need(module, never):
    loaded = _imported_after(module)
    assert not {m for m in loaded for n in never if m == n or m.startswith(n + ".")}


def test_no_library_function_is_longer_than_90_lines():
    """A function that does one job fits on a screen; the training loop's jobs are separate functions."""
    import ast
    from pathlib import Path

    lib = Path(__file__).resolve().parents[1] / "lib"
    long = [f"{path.relative_to(lib)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(lib.rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 90]
    assert long == []
