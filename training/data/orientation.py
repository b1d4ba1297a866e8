"""EXIF orientation: read the tag from JPEG/PNG bytes, write it, and apply it.

The EXIF ``Orientation`` tag (0x0112) says how the stored pixels must be flipped or
rotated to show the picture upright. Decoders disagree about it (OpenCV's ``imdecode``
applies it unless ``IMREAD_IGNORE_ORIENTATION`` is set, PIL needs
``ImageOps.exif_transpose``, simplejpeg ignores it), so we always decode the stored
pixels and apply the tag here, to the image and to the polygons alike.

Coordinates are continuous: pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``,
so a horizontal flip maps ``x`` to ``W - x`` and a polygon covers exactly the same
pixels after the transform as before.

Values (stored -> displayed), with ``W, H`` the stored width and height:

====  ====================  =========================
tag   image operation       point ``(x, y)`` becomes
====  ====================  =========================
1     none                  ``(x, y)``
2     mirror left-right     ``(W - x, y)``
3     rotate 180            ``(W - x, H - y)``
4     mirror top-bottom     ``(x, H - y)``
5     transpose             ``(y, x)``
6     rotate 90 clockwise   ``(H - y, x)``
7     transverse            ``(H - y, W - x)``
8     rotate 90 counter-cw  ``(y, W - x)``
====  ====================  =========================
"""

from __future__ import annotations

import struct

import numpy as np

ORIENTATIONS = tuple(range(1, 9))
_TAG_ORIENTATION = 0x0112
_TYPE_SHORT = 3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def _check(orientation: int) -> int:
    if orientation not in _INVERSE:
        raise ValueError(f"EXIF orientation must be an integer 1..8, got {orientation!r}")
    return orientation


def inverse(orientation: int) -> int:
    """The orientation that undoes ``orientation`` (6 and 8 swap; the others undo themselves)."""
    return _INVERSE[_check(orientation)]


def _tiff_orientation(tiff: bytes) -> int:
    """Orientation from a TIFF structure (the body of an Exif block); 1 when absent or bad."""
    if len(tiff) < 8:
        return 1
    order = tiff[:2]
    if order == b"II":
        end = "<"
    elif order == b"MM":
        end = ">"
    else:
        return 1
    magic, ifd = struct.unpack_from(end + "HI", tiff, 2)
    if magic != 42 or ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(end + "H", tiff, ifd)
    for i in range(count):
        pos = ifd + 2 + 12 * i
        if pos + 12 > len(tiff):
            return 1
        tag, typ, n = struct.unpack_from(end + "HHI", tiff, pos)
        if tag == _TAG_ORIENTATION:
            if typ != _TYPE_SHORT or n != 1:
                return 1
            (value,) = struct.unpack_from(end + "H", tiff, pos + 8)
            return value if value in _INVERSE else 1
    return 1


def _jpeg_orientation(data: bytes) -> int:
    pos = 2
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return 1  # not at a marker: malformed header, treat as untagged
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more headers
            return 1
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            return 1
        if marker == 0xE1:
            body = data[pos + 4 : pos + 2 + length]
            if body.startswith(b"Exif\x00\x00"):
                return _tiff_orientation(body[6:])
        pos += 2 + length
    return 1


def _png_orientation(data: bytes) -> int:
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"eXIf":
            return _tiff_orientation(data[pos + 8 : pos + 8 + length])
        if kind in (b"IDAT", b"IEND"):
            return 1  # eXIf must come before the image data
        pos += 12 + length
    return 1


def read_orientation(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The EXIF orientation tag of an encoded JPEG or PNG image.

    Only the headers are read (for JPEG, the segments before the first scan; for PNG,
    the chunks before the image data). A file without the tag, with a malformed Exif
    block or with a value outside 1..8 counts as 1 (upright), as image viewers do.

    Args:
        data: the encoded file's bytes (a uint8 array works too).

    Returns:
        The orientation, 1..8.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        if raw[:2] == b"\xff\xd8":
            return _jpeg_orientation(raw)
        if raw[:8] == _PNG_SIGNATURE:
            return _png_orientation(raw)
    except struct.error:
        return 1  # a header cut short: no usable tag
    return 1


def exif_segment(orientation: int) -> bytes:
    """A minimal JPEG APP1 Exif segment holding only the orientation tag (big-endian TIFF)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1)  # one IFD entry
    tiff += struct.pack(">HHIH2x", _TAG_ORIENTATION, _TYPE_SHORT, 1, _check(orientation))
    tiff += struct.pack(">I", 0)  # no next IFD
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def add_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an Exif orientation segment into a JPEG (after SOI and any JFIF APP0).

    Raises:
        ValueError: ``jpeg`` does not start with the JPEG SOI marker, or a bad orientation.
    """
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("add_orientation: data is not a JPEG (no SOI marker)")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":  # keep JFIF first, where JFIF readers expect it
        (length,) = struct.unpack_from(">H", jpeg, 4)
        pos = 4 + length
    return jpeg[:pos] + exif_segment(orientation) + jpeg[pos:]


def displayed_size(stored_hw: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(height, width) of the displayed image given the stored (height, width)."""
    h, w = stored_hw
    return (w, h) if _check(orientation) >= 5 else (h, w)


def apply_to_image(image: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W, ...) -> displayed pixels; a view, not a copy."""
    o = _check(orientation)
    if o == 1:
        return image
    if o == 2:
        return image[:, ::-1]
    if o == 3:
        return image[::-1, ::-1]
    if o == 4:
        return image[::-1]
    if o == 5:
        return image.swapaxes(0, 1)
    if o == 6:
        return image[::-1].swapaxes(0, 1)
    if o == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    return image[:, ::-1].swapaxes(0, 1)


def undo_on_image(image: np.ndarray, orientation: int) -> np.ndarray:
    """Displayed pixels -> stored pixels (what a camera writes with this tag); a view."""
    return apply_to_image(image, inverse(orientation))


def apply_to_points(points: np.ndarray, stored_hw: tuple[int, int], orientation: int) -> np.ndarray:
    """Map points (N, 2) ``(x, y)`` from the stored frame to the displayed frame.

    Args:
        points: (N, 2) coordinates in the stored image.
        stored_hw: (height, width) of the stored image.
        orientation: EXIF orientation 1..8.

    Returns:
        A new (N, 2) array of the same dtype.
    """
    o = _check(orientation)
    h, w = stored_hw
    pts = np.asarray(points)
    x, y = pts[:, 0], pts[:, 1]
    if o == 1:
        out = (x, y)
    elif o == 2:
        out = (w - x, y)
    elif o == 3:
        out = (w - x, h - y)
    elif o == 4:
        out = (x, h - y)
    elif o == 5:
        out = (y, x)
    elif o == 6:
        out = (h - y, x)
    elif o == 7:
        out = (h - y, w - x)
    else:
        out = (y, w - x)
    return np.stack(out, axis=1).astype(pts.dtype, copy=False)


def undo_on_points(points: np.ndarray, stored_hw: tuple[int, int], orientation: int) -> np.ndarray:
    """Map points (N, 2) from the displayed frame back to the stored frame."""
    disp_hw = displayed_size(stored_hw, orientation)
    return apply_to_points(points, disp_hw, inverse(orientation))
