"""Decoding radiographs of any pixel mode to 8-bit grayscale, and resizing them to a square."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FITS = ("crop", "pad", "stretch")
# Radiographs are stored with 8 to 16 significant bits; a high-bit-depth image is scaled by the smallest of these
# ranges that holds its maximum, so 12-bit data in a 16-bit container is not rendered nearly black.
_BIT_DEPTHS = (8, 10, 12, 14, 16, 32)
# The largest file accepted as one radiograph (NIH's PNGs are under 1 MB; a 4k x 4k 16-bit DICOM export is 32 MB):
# anything bigger is refused before it is read, so one hostile file cannot exhaust a worker's memory.
MAX_IMAGE_BYTES = 64 << 20


class DecodeError(Exception):
    """The file is empty, truncated or not an image."""


@dataclass
class Decoded:
    image: np.ndarray  # uint8 (size, size)
    width: int  # of the source
    height: int
    mode: str
    upscaled: bool


def to_uint8_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> mode "L". Colour by ITU-R 601 luma; alpha dropped; 16/32-bit and float rescaled."""
    if img.mode == "L":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(rescale_to_uint8(np.asarray(img)), mode="L")
    if img.mode in ("LA", "La"):
        return img.getchannel(0)
    return img.convert("L")


def rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """High-bit-depth integers: linear scale of [0, 2^bits - 1] to [0, 255], bits the smallest standard depth
    that holds the image's maximum (negative values shift to 0 first). Floats: min-max to [0, 255]."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    if arr.dtype.kind == "f":
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = np.nan_to_num(a, nan=lo)
        scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    else:
        lo = min(0.0, a.min())
        a = a - lo
        bits = next(b for b in _BIT_DEPTHS if a.max() <= 2**b - 1)
        scaled = a * (255.0 / (2**bits - 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def fit_square(img: Image.Image, size: int, fit: str = "crop") -> Image.Image:
    """Make ``img`` (mode L) square at ``size``: centre crop, zero pad, or stretch; antialiased Lanczos."""
    w, h = img.size
    if fit == "crop" and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    elif fit == "pad" and w != h:
        s = max(w, h)
        canvas = Image.new("L", (s, s), 0)
        canvas.paste(img, ((s - w) // 2, (s - h) // 2))
        img = canvas
    if img.size == (size, size):
        return img
    # reducing_gap: a fast box reduction to within 3x of the target, then Lanczos (visually identical, ~3x faster)
    return img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def decode(source: str | Path | bytes, size: int, fit: str = "crop") -> Decoded:
    """Decode a file path or its bytes to a uint8 (size, size) grayscale array. Raises DecodeError."""
    n = len(source) if isinstance(source, (bytes, bytearray)) else _file_size(source)
    if n > MAX_IMAGE_BYTES:
        raise DecodeError(f"{n / 2**20:.0f} MB, over the {MAX_IMAGE_BYTES >> 20} MB limit for one radiograph")
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(fp) as img:
            width, height, mode = img.width, img.height, img.mode
            if img.format == "JPEG":
                img.draft("L", (size, size))  # decode at a reduced scale straight from the DCT
            img.load()
            gray = to_uint8_gray(img)
            out = fit_square(gray, size, fit)
            return Decoded(np.asarray(out, dtype=np.uint8).copy(), width, height, mode, min(width, height) < size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DecodeError(_reason(source, e)) from None


def _file_size(path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0  # decoding it reports why it cannot be read


def _reason(source, e: Exception) -> str:
    try:
        n = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size
    except OSError:
        return f"unreadable: {e}"
    return "empty file" if n == 0 else (str(e) or type(e).__name__)
