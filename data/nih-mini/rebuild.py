"""Rebuild this folder from a copy of NIH ChestX-ray14 images at 64x64 (the project's development subset):
keep the images whose labels are exactly "No Finding" or contain "Infiltration" (the two classes cxrgan makes),
store them as 8-bit grayscale PNGs (smaller than the RGB originals; the pixels are the same gray values), and
write their rows of the official metadata csv.

    .venv/bin/python data/nih-mini/rebuild.py --src ../shared/data/nih64
"""

import csv
import sys
from pathlib import Path

import fire
from PIL import Image

HERE = Path(__file__).resolve().parent


def wanted(labels: str) -> bool:
    parts = labels.split("|")
    return parts == ["No Finding"] or "Infiltration" in parts


def main(src: str):
    src = Path(src)
    with open(src / "Data_Entry_subset.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if wanted(r[1])]
    if not rows:
        sys.exit(f"no No Finding / Infiltration rows in {src / 'Data_Entry_subset.csv'}")
    out = HERE / "images"
    out.mkdir(exist_ok=True)
    for r in rows:
        gray = Image.open(src / "images" / r[0]).convert("L")
        gray.save(out / r[0], optimize=True)
    with open(HERE / "Data_Entry_nih-mini.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"{len(rows)} images in {out}")


if __name__ == "__main__":
    fire.Fire(main)
