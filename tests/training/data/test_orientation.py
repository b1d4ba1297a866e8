from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from training.data import orientation as orient


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _tiff(order: bytes, value: int, *, typ: int = 3, extra_first: bool = True) -> bytes:
    e = "<" if order == b"II" else ">"
    entries = []
    if extra_first:  # another tag before the orientation, as cameras write
        entries.append(struct.pack(e + "HHI4s", 0x010F, 2, 4, b"cam\x00"))
    entries.append(struct.pack(e + "HHIH2x", 0x0112, typ, 1, value))
    body = order + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", len(entries))
    return body + b"".join(entries) + struct.pack(e + "I", 0)


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + seg + jpeg[2:]


@pytest.fixture(scope="module")
def plain_jpeg() -> bytes:
    return _jpeg(np.full((8, 12, 3), 100, np.uint8))


@pytest.mark.parametrize("value", orient.ORIENTATIONS)
def test_written_tag_is_read_back_by_us_and_by_pil(plain_jpeg: bytes, value: int) -> None:
    data = orient.add_orientation(plain_jpeg, value)
    assert orient.read_orientation(data) == value
    assert orient.read_orientation(np.frombuffer(data, np.uint8)) == value
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == value


@pytest.mark.parametrize("order", [b"II", b"MM"])
def test_both_byte_orders(plain_jpeg: bytes, order: bytes) -> None:
    data = _with_app1(plain_jpeg, b"Exif\x00\x00" + _tiff(order, 6))
    assert orient.read_orientation(data) == 6


@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00" + _tiff(b"MM", 9),  # out of range
        b"Exif\x00\x00" + _tiff(b"MM", 6, typ=4),  # wrong type
        b"Exif\x00\x00" + _tiff(b"MM", 6)[:20],  # IFD cut short
        b"Exif\x00\x00" + b"XX" + _tiff(b"MM", 6)[2:],  # bad byte order
        b"Exif\x00\x00",
        b"http://ns.adobe.com/xap/1.0/\x00<x/>",  # XMP, not Exif
    ],
)
def test_malformed_or_foreign_app1_counts_as_upright(plain_jpeg: bytes, payload: bytes) -> None:
    assert orient.read_orientation(_with_app1(plain_jpeg, payload)) == 1


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"not an image", b"\x89PNG\r\n\x1a\n"]
)
def test_truncated_headers_count_as_upright(data: bytes) -> None:
    assert orient.read_orientation(data) == 1


def test_tag_after_the_scan_is_not_read(plain_jpeg: bytes) -> None:
    app1 = orient.exif_segment(6)
    # An Exif block after EOI is not a header: readers stop at the first scan.
    assert orient.read_orientation(plain_jpeg + app1) == 1


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_exif_chunk() -> None:
    _, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    png = buf.tobytes()
    ihdr_end = 8 + 8 + 13 + 4
    tagged = png[:ihdr_end] + _png_chunk(b"eXIf", _tiff(b"II", 8)) + png[ihdr_end:]
    assert orient.read_orientation(tagged) == 8
    assert Image.open(io.BytesIO(tagged)).getexif().get(0x0112) == 8
    assert orient.read_orientation(png) == 1


def test_add_orientation_keeps_jfif_first_and_rejects_non_jpeg(plain_jpeg: bytes) -> None:
    data = orient.add_orientation(plain_jpeg, 3)
    assert data[2:4] == b"\xff\xe0" and b"Exif\x00\x00" in data[:200]
    with pytest.raises(ValueError, match="not a JPEG"):
        orient.add_orientation(b"\x89PNG....", 3)
    with pytest.raises(ValueError, match=r"1\.\.8"):
        orient.exif_segment(0)


@pytest.mark.parametrize("value", orient.ORIENTATIONS)
def test_apply_to_image_matches_pil_exif_transpose(value: int) -> None:
    rng = np.random.default_rng(value)
    stored = rng.integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = value
    buf = io.BytesIO()
    pil.save(buf, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
    got = orient.apply_to_image(stored, value)
    np.testing.assert_array_equal(got, expected)
    assert got.shape[:2] == orient.displayed_size(stored.shape[:2], value)
    np.testing.assert_array_equal(orient.undo_on_image(got, value), stored)


@pytest.mark.parametrize("value", orient.ORIENTATIONS)
def test_points_follow_pixels(value: int) -> None:
    h, w = 5, 7
    stored = np.arange(h * w).reshape(h, w)
    shown = orient.apply_to_image(stored, value)
    rows, cols = np.mgrid[0:h, 0:w]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    moved = orient.apply_to_points(centres, (h, w), value)
    # The pixel under each moved centre holds the value stored under the original one.
    np.testing.assert_array_equal(
        shown[np.floor(moved[:, 1]).astype(int), np.floor(moved[:, 0]).astype(int)],
        stored.ravel(),
    )
    np.testing.assert_allclose(orient.undo_on_points(moved, (h, w), value), centres)
    # Pixel corners map onto the displayed image's corners (continuous frame).
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dh, dw = orient.displayed_size((h, w), value)
    got = {tuple(p) for p in orient.apply_to_points(corners, (h, w), value).tolist()}
    assert got == {(0, 0), (dw, 0), (dw, dh), (0, dh)}


def test_inverse_and_bad_values() -> None:
    assert [orient.inverse(o) for o in orient.ORIENTATIONS] == [1, 2, 3, 4, 5, 8, 7, 6]
    with pytest.raises(ValueError):
        orient.apply_to_image(np.zeros((2, 2)), 9)
