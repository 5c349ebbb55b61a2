import io

import numpy as np
import pytest
from PIL import Image

from cxrgan.data.imaging import DecodeError, decode, rescale_to_uint8


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


GRAY = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # 16x16 horizontal ramp


def test_l_mode_at_target_size_is_identity():
    assert np.array_equal(decode(_encode(Image.fromarray(GRAY, "L")), 16).image, GRAY)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "I", "I;16"])
def test_every_mode_decodes_to_the_same_gray(mode):
    if mode == "I;16":
        img = Image.fromarray(GRAY.astype(np.uint16) * 257)  # full 16-bit range
    elif mode == "I":
        img = Image.fromarray(GRAY.astype(np.int32) * 257, mode="I")
    else:
        img = Image.fromarray(GRAY, "L").convert(mode)
    out = decode(_encode(img, "TIFF" if mode == "I" else "PNG"), 16)  # PNG cannot hold 32-bit ints
    assert out.image.dtype == np.uint8 and out.image.shape == (16, 16)
    assert np.abs(out.image.astype(int) - GRAY).max() <= 1, mode


def test_twelve_bit_data_in_sixteen_bit_container_uses_its_range():
    twelve = (GRAY.astype(np.uint32) * 4095 // 255).astype(np.uint16)  # 0..4095
    out = decode(_encode(Image.fromarray(twelve)), 16).image
    assert np.abs(out.astype(int) - GRAY).max() <= 1  # not divided by 65535 (which would be near-black)


def test_rescale_float_and_negative():
    assert rescale_to_uint8(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    assert rescale_to_uint8(np.array([[-255, 0]], dtype=np.int16)).tolist() == [[0, 255]]


def test_bilevel_and_jpeg():
    assert decode(_encode(Image.fromarray(GRAY, "L").convert("1")), 16).image.max() == 255
    jpg = decode(_encode(Image.fromarray(np.full((64, 64), 100, np.uint8), "L"), "JPEG"), 16).image
    assert abs(int(jpg.mean()) - 100) <= 2


def test_resize_is_antialiased():
    checker = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    out = decode(_encode(Image.fromarray(checker, "L")), 32).image
    assert np.abs(out.astype(int) - 128).max() <= 3  # averaged to gray, not aliased to black/white


@pytest.mark.parametrize("fit,expect_left", [("crop", 255), ("pad", 0), ("stretch", 255)])
def test_non_square_fit(fit, expect_left):
    wide = np.full((32, 64), 255, np.uint8)
    out = decode(_encode(Image.fromarray(wide, "L")), 32, fit).image
    assert out.shape == (32, 32)
    assert out[16, 16] == 255 and out[2, 16] == expect_left  # pad adds black bars above and below


def test_upscale_is_flagged():
    assert decode(_encode(Image.fromarray(GRAY, "L")), 32).upscaled
    assert not decode(_encode(Image.fromarray(GRAY, "L")), 8).upscaled


def test_bad_inputs_raise_decode_error(tmp_path):
    good = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "L"))
    with pytest.raises(DecodeError, match="empty"):
        decode(b"", 16)
    with pytest.raises(DecodeError):
        decode(good[: len(good) // 2], 16)  # truncated
    with pytest.raises(DecodeError):
        decode(b"this is not an image", 16)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode(empty, 16)
