"""bench/speed/gpu.py in its tiny CPU mode: every measurement that can run on the CPU runs and gives a rate, the
CUDA-only ones say so, and the section lands in the markdown file asked for."""

import json
import math
import subprocess
import sys

from conftest import ROOT

CUDA_ONLY = ("bf16", "compile")  # rows that only run on CUDA (bf16 autocast, torch.compile)


def test_gpu_bench_runs_tiny_on_the_cpu(tmp_path):
    md, records = tmp_path / "bench.md", tmp_path / "gpu.json"
    # (its last step, make all DATA=nih, runs in `make gpu-check`, which `make test` runs)
    args = ["bench/speed/gpu.py", "--device", "cpu", "--tiny", "--nomake-all", "--out", str(md), "--json", str(records)]
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    results = json.loads(records.read_text())
    names = [row["name"] for row in results]
    for part in ("limited GAN training", "diffusion training", "ResNet-18 training", "limited GAN sampling",
                 "diffusion sampling", "fid_is Inception features"):
        assert any(name.startswith(part) for name in names), (part, names)
    assert all(set(row) == {"name", "img_per_s", "peak_mem_mb", "status"} for row in results)
    for row in results:
        assert row["peak_mem_mb"] is None, row  # no GPU memory on the CPU
        if any(word in row["name"] for word in CUDA_ONLY):
            assert row["status"] == "CUDA only" and row["img_per_s"] is None, row
        else:
            assert row["status"] == "ok", row
            assert math.isfinite(row["img_per_s"]) and row["img_per_s"] > 0, row
    assert sum(row["status"] == "ok" for row in results) >= 6

    text = md.read_text()
    assert text.count("<!-- bench:gpu -->") == 1 and "## GPU readiness" in text
    assert f"- Command: `python {' '.join(args)}`" in text
    for name in names:
        assert f"| {name} |" in text
