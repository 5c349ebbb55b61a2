#!/usr/bin/env python3
"""A NIH-shaped ChestX-ray14 release, made at test time, and a local HTTP server for it (`make nih-smoke`).

`write` lays out what NIH ships, at a small scale: images_001.tar.gz ... images_012.tar.gz with members
images/PPPPPPPP_FFF.png (1024x1024 8-bit gray PNGs), Data_Entry_2017_v2020.csv with the official columns,
train_val_list.txt and test_list.txt (split by patient, as NIH's are), and an MD5SUMS of every file.
The radiographs are procedural phantoms (cxrgan.data.phantoms; not medical images), or real NIH images taken from
folders given with --real (each holding Data_Entry_subset.csv and the PNGs, as ../shared/data/nih64 and
nih-fullres do), which keep their names, patients and labels. With real images the two lists are this script's
patient split, not NIH's (which is not available offline).

`weights` writes random-weight stand-ins for the weights a user's machine downloads (the FID Inception network,
torchxrayvision's DenseNet), for INCEPTION_WEIGHTS= and XRV_WEIGHTS= offline.

`serve` serves a folder on 127.0.0.1 (a free port, written to --port-file) for `make download MIRROR=...`,
and stops by itself after --max-seconds.

    python tests/nih_release.py write build/nih-release [--patients 60] [--real ../shared/data/nih-fullres]
    python tests/nih_release.py weights build/weights
    python tests/nih_release.py serve build/nih-release --port-file build/port
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fire
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from cxrgan.data.phantoms import render  # noqa: E402

ARCHIVES = 12
HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
          "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
# label mix of the phantom patients' images: the two classes, a co-occurring finding, and others left out
FINDINGS = ("No Finding", "No Finding", "No Finding", "Infiltration", "Infiltration", "Infiltration|Effusion",
            "Atelectasis", "Effusion|Nodule")
FIRST_PATIENT = 40001  # phantom patients' ids: above the release's 30,805, so never one of a real image's


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def phantom_rows(patients: int, seed: int, side: int) -> list[tuple[dict, bytes]]:
    """1-4 images per patient at ``side`` x ``side``: drawn at 256 (the phantom model's detail) and upscaled."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(patients):
        pid = FIRST_PATIENT + k
        for follow_up in range(int(rng.integers(1, 5))):
            findings = FINDINGS[int(rng.integers(len(FINDINGS)))]
            small = render(256, int("Infiltration" in findings), rng)
            gray = np.asarray(Image.fromarray(small).resize((side, side), Image.BILINEAR))
            row = {"Image Index": f"{pid:08d}_{follow_up:03d}.png", "Finding Labels": findings,
                   "Follow-up #": str(follow_up), "Patient ID": str(pid), "Patient Age": str(int(rng.integers(20, 90))),
                   "Patient Gender": "MF"[int(rng.integers(2))], "View Position": "PA" if rng.random() < 0.6 else "AP",
                   "OriginalImage[Width": str(side), "Height]": str(side), "OriginalImagePixelSpacing[x": "0.143",
                   "y]": "0.143"}
            out.append((row, _png(gray)))
    return out


def real_rows(folder: Path) -> list[tuple[dict, bytes]]:
    """The images of a folder holding Data_Entry_subset.csv (or Data_Entry*.csv) and the PNGs it names (anywhere
    below), as they are."""
    csv_path = next(iter(sorted(folder.glob("Data_Entry*.csv"))), None)
    if csv_path is None:
        sys.exit(f"error: --real {folder}: no Data_Entry*.csv there")
    files = {p.name: p for p in folder.rglob("*.png")}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [dict(zip(HEADER, r)) for r in reader if r and r[0] in files]
    return [(row, files[row["Image Index"]].read_bytes()) for row in rows]


def write(out: str, patients: int = 60, seed: int = 0, side: int = 1024, real: str | tuple | None = None,
          test_fraction: float = 0.25) -> None:
    """Write the release into ``out``: phantoms for ``patients`` patients at ``side`` px, or with --real
    DIR[,DIR...] the real images of those folders instead (--patients 0) or as well (an image in two folders: the
    first folder's copy)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = phantom_rows(patients, seed, side) if patients else []
    for folder in ([real] if isinstance(real, str) else list(real or [])):
        for part in str(folder).split(","):
            items += real_rows(Path(part))
    if not items:
        sys.exit("error: no images: give --patients N or --real DIR")
    first = {}
    for row, data in items:  # an image in two folders (e.g. at two resolutions): the first folder's copy
        first.setdefault(row["Image Index"], (row, data))
    if len(first) < len(items):
        print(f"note: {len(items) - len(first)} images were in an earlier folder too; kept the first copy")
    items = list(first.values())
    items.sort(key=lambda item: item[0]["Image Index"])  # NIH's archives and csv are in name order
    for k in range(ARCHIVES):  # consecutive runs of names per archive, as NIH's; some may be empty
        with tarfile.open(out / f"images_{k + 1:03d}.tar.gz", "w:gz", compresslevel=1) as tar:
            for row, data in items[k * len(items) // ARCHIVES:(k + 1) * len(items) // ARCHIVES]:
                info = tarfile.TarInfo(f"images/{row['Image Index']}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    with open(out / "Data_Entry_2017_v2020.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows([row[h] for h in HEADER] for row, _ in items)
    # NIH's lists split by patient; here a seeded share of the patients is the test list
    pids = sorted({row["Patient ID"] for row, _ in items})
    test = set(np.random.default_rng(seed).permutation(pids)[:max(1, round(test_fraction * len(pids)))])
    for name, chosen in (("test_list.txt", True), ("train_val_list.txt", False)):
        (out / name).write_text("".join(f"{row['Image Index']}\n" for row, _ in items
                                        if (row["Patient ID"] in test) == chosen))
    sums = [f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(out.iterdir())
            if p.is_file() and p.name != "MD5SUMS"]
    (out / "MD5SUMS").write_text("".join(sums))
    n_real = sum(1 for row, _ in items if int(row["Patient ID"]) < FIRST_PATIENT)
    print(f"wrote a NIH-shaped release of {len(items)} images ({n_real} real) from {len(pids)} patients "
          f"({len(test)} in test_list.txt) to {out}")


def weights(out: str) -> None:
    """OUT/inception-random.pt and OUT/xrv-random.pt: random weights in the published files' formats."""
    import torch
    import torchxrayvision
    from cxrgan.metrics.inception import random_weights

    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(random_weights(0), Path(out) / "inception-random.pt")
    torch.manual_seed(0)
    torch.save(torchxrayvision.models.DenseNet(weights=None, num_classes=18).state_dict(), Path(out) / "xrv-random.pt")
    print(f"wrote random-weight stand-ins to {out}/inception-random.pt and {out}/xrv-random.pt")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: str, port_file: str, max_seconds: float = 3600) -> None:
    """Serve ``folder`` on 127.0.0.1 (HTTP Range is not needed: download_nih restarts a file that cannot resume),
    write the port to ``port_file``, and stop after ``max_seconds``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=folder))
    threading.Timer(max_seconds, server.shutdown).start()
    tmp = Path(f"{port_file}.tmp")  # whole or absent: the waiting side reads it as soon as it exists
    tmp.write_text(f"{server.server_address[1]}\n")
    tmp.rename(port_file)
    server.serve_forever()


if __name__ == "__main__":
    fire.Fire({"write": write, "weights": weights, "serve": serve})
