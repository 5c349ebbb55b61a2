"""Tiny generated inputs shared by the tests: NIH-style PNG trees, a Data_Entry csv, tar.gz archives."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CSV_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def nih_rows(n_patients: int = 12, seed: int = 0) -> list[dict]:
    """Rows like the NIH csv: 1-4 images per patient, a mix of No Finding, Infiltration (alone or with others)
    and other findings, PA and AP views."""
    rng = np.random.default_rng(seed)
    findings = ["No Finding", "No Finding", "Infiltration", "Infiltration|Effusion", "Atelectasis", "Effusion"]
    rows = []
    for p in range(1, n_patients + 1):
        for f in range(int(rng.integers(1, 5))):
            rows.append({"name": f"{p:08d}_{f:03d}.png", "findings": findings[int(rng.integers(len(findings)))],
                         "patient": p, "view": "PA" if rng.random() < 0.6 else "AP"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    lines = [CSV_HEADER] + [f"{r['name']},{r['findings']},0,{r['patient']},50,M,{r['view']},1024,1024,0.14,0.14"
                            for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def image_for(name: str, size: int = 32) -> np.ndarray:
    """A deterministic, distinct gray image per file name."""
    rng = np.random.default_rng(list(name.encode()))
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def png_bytes(arr: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_nih_tree(root: Path, rows: list[dict], size: int = 32) -> Path:
    """images_00K/images/NAME.png, ~5 images per folder, plus Data_Entry_2017_v2020.csv."""
    for i, r in enumerate(rows):
        d = root / f"images_{i // 5 + 1:03d}" / "images"
        d.mkdir(parents=True, exist_ok=True)
        (d / r["name"]).write_bytes(png_bytes(image_for(r["name"], size)))
    write_csv(root / "Data_Entry_2017_v2020.csv", rows)
    return root


def write_archives(root: Path, rows: list[dict], size: int = 32, per_archive: int = 10) -> Path:
    """The official layout: images_0XX.tar.gz holding images/NAME.png, plus the csv."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(rows), per_archive):
        with tarfile.open(root / f"images_{k // per_archive + 1:03d}.tar.gz", "w:gz") as tar:
            for r in rows[k:k + per_archive]:
                add_member(tar, f"images/{r['name']}", png_bytes(image_for(r["name"], size)))
    write_csv(root / "Data_Entry_2017_v2020.csv", rows)
    return root


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def run_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def load_tool(name: str):
    """tools/NAME.py as a module, loaded now: its ``main`` runs the tool in this process (so a table row a test
    registers with monkeypatch reaches it, help included)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}_under_test", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def nih_tree(tmp_path):
    rows = nih_rows()
    return write_nih_tree(tmp_path / "nih", rows), rows


def kill_9_then_rerun(args: list, when_exists: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Start ``args``, SIGKILL it as soon as ``when_exists`` appears, then run it again to the end."""
    import os
    import signal
    import time

    proc = subprocess.Popen(list(map(str, args)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not when_exists.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return subprocess.run(list(map(str, args)), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


TINY_GAN = dict(batch=8, base=8, grid=4, device="cpu")  # GAN options for tests: narrow networks, small batches


def _phantom_file(tmp_path_factory, n: int):
    from cxrgan.data.phantoms import generate

    path = tmp_path_factory.mktemp("data") / f"ph32-{n}.h5"
    generate(path, n=n, size=32, seed=0)
    return path


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory):
    """48 phantoms at 32x32 (seed 0): enough for a few GAN steps."""
    return _phantom_file(tmp_path_factory, 48)


@pytest.fixture(scope="session")
def phantoms96(tmp_path_factory):
    """96 phantoms at 32x32 (seed 0): a validation split with both classes, for snapshots."""
    return _phantom_file(tmp_path_factory, 96)


requires_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
