"""Damaged and hostile image files, made from real small ones."""

from __future__ import annotations

import struct

import cv2
import numpy as np

_SOF = (0xC0, 0xC1, 0xC2)


def small_jpeg() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def small_png() -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((24, 32, 3), np.uint8))
    assert ok
    return buf.tobytes()


def jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a real JPEG) with its SOF header patched to ``width`` x ``height``."""
    out = bytearray(data)
    i = 2
    while i + 4 <= len(out):
        assert out[i] == 0xFF, "not at a JPEG marker"
        marker, length = out[i + 1], struct.unpack_from(">H", out, i + 2)[0]
        if marker in _SOF:
            struct.pack_into(">HH", out, i + 5, height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker found")


def png_declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a real PNG) with its IHDR patched to ``width`` x ``height``."""
    out = bytearray(data)
    assert out[12:16] == b"IHDR"
    struct.pack_into(">II", out, 16, width, height)
    return bytes(out)


def bad_files() -> dict[str, bytes]:
    """One file of each kind strict mode must refuse in one line."""
    jpeg = small_jpeg()
    return {
        "zero_byte": b"",
        "not_an_image": b"name,amount\nCOFFEE,3.50\n",
        "truncated": jpeg[: len(jpeg) // 2],
        "corrupt": jpeg[:200] + bytes(64) + jpeg[264:],
        "bomb": jpeg_declaring(jpeg, 40_000, 30_000),
    }
