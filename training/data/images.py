"""Image decoding: JPEG/PNG bytes -> upright RGB uint8, with reduced-size JPEG decoding.

The stored pixels are decoded with EXIF orientation *ignored* (OpenCV with
``IMREAD_IGNORE_ORIENTATION``; simplejpeg never applies it) and the tag read by
:mod:`training.data.orientation` is applied afterwards, so both decoders give the same
pixels and the polygons get exactly the same transform.

Reduced-size decoding: when the image will be shrunk to ``target_size`` on its longest
side anyway, libjpeg can decode at 1/2, 1/4 or 1/8 scale by dropping DCT coefficients,
which is cheaper than decoding in full and resizing. We use the largest power-of-two
reduction that keeps the longest side at or above ``target_size`` (so the canonical
resize still only shrinks). Decoded pixel ``j`` then covers original pixels
``[j*k, (j+1)*k)``; :attr:`DecodedImage.reduction` records ``k``. Measured on 240
synthetic receipts (2-core CPU container, target 640, the 127 reducible files, best
of 5): decode + canonical resize 6.8 ms against 12.0 ms, and the result is *closer*
to a careful reference (full decode, INTER_AREA resize) than full decode + the
canonical bilinear resize: mean absolute difference 1.4 against 1.7 grey levels,
worst file 3.0. The tolerance we hold it to is :data:`DCT_TOLERANCE` per image.

A file that is not an image, is truncated or has corrupt data raises
:class:`BadSampleError` naming the file. The ``opencv`` decoder catches truncation
and non-images but, like libjpeg, only warns about corrupt entropy-coded data; the
``auto`` decoder uses simplejpeg in strict mode for JPEG and reports it. An image
whose header (JPEG SOF, PNG IHDR) declares more than ``max_pixels`` pixels is a bad
sample too, refused before any pixel is decoded: a small file can declare gigapixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import simplejpeg

from training.data import orientation as orient

Decoder = Literal["auto", "opencv", "simplejpeg"]
DCT_TOLERANCE = 5.0
MAX_PIXELS = 100_000_000
"""Default limit on the pixels an image header may declare (``data.max_pixels``)."""
"""Largest mean absolute difference (grey levels, 0..255) per image allowed between a
reduced-size decode + canonical resize and full decode + INTER_AREA resize."""

_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip


class BadSampleError(ValueError):
    """A sample's file cannot be used (not an image, truncated, corrupt, too large).

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from
    the formatted worker traceback alone (one argument); the path and reason are then
    recovered from its last line, so the main process sees the same one-line error.

    Attributes:
        path: the offending file.
        reason: what is wrong with it.
        worker_traceback: the worker's formatted traceback when re-raised from a
            DataLoader worker, else None.
    """

    def __init__(self, path: str, reason: str | None = None) -> None:
        self.worker_traceback: str | None = None
        if reason is None:
            self.worker_traceback = path
            path, reason = _from_worker_message(path)
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _from_worker_message(message: str) -> tuple[str, str]:
    """``(path, reason)`` from torch's "Caught BadSampleError in DataLoader worker ..."."""
    last = next((ln for ln in reversed(message.splitlines()) if ln.strip()), message)
    _, sep, text = last.partition(f"{BadSampleError.__name__}: ")
    if not sep:
        return "<unknown file>", last.strip()
    path, sep, reason = text.partition(": ")
    return (path, reason) if sep else ("<unknown file>", text)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded, upright image.

    Attributes:
        image: (H, W, 3) uint8 RGB in the displayed frame (EXIF orientation applied),
            possibly reduced by ``reduction``.
        orientation: the EXIF orientation that was applied (1..8).
        stored_hw: (height, width) of the stored pixels at full resolution.
        reduction: DCT reduction factor k (1, 2, 4 or 8).
    """

    image: np.ndarray
    orientation: int
    stored_hw: tuple[int, int]
    reduction: int

    @property
    def displayed_hw(self) -> tuple[int, int]:
        """(height, width) of the upright image at full resolution."""
        return orient.displayed_size(self.stored_hw, self.orientation)


def image_format(data: bytes | np.ndarray) -> str | None:
    """``"jpeg"`` or ``"png"`` from the file's magic bytes, else None."""
    head = bytes(data[:8])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def _stored_hw(data: bytes, fmt: str, path: str) -> tuple[int, int]:
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadSampleError(path, "PNG without an IHDR header")
        w, h = struct.unpack_from(">II", data, 16)
        return h, w
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise BadSampleError(path, f"unreadable JPEG header ({exc})") from None
    return h, w


def choose_reduction(stored_hw: tuple[int, int], target_size: int | None) -> int:
    """Largest k in (1, 2, 4, 8) with ``ceil(longest / k) >= target_size``."""
    if not target_size:
        return 1
    longest = max(stored_hw)
    k = 1
    while k < 8 and -(-longest // (2 * k)) >= target_size:
        k *= 2
    return k


def _decode_opencv(data: bytes, k: int, path: str) -> np.ndarray:
    flags = _REDUCED_FLAGS[k] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # its own checks, such as CV_IO_MAX_IMAGE_PIXELS
        raise BadSampleError(path, f"OpenCV refused the image ({exc.err})") from None
    if bgr is None:
        raise BadSampleError(path, "OpenCV could not decode the image (truncated or corrupt)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_simplejpeg(data: bytes, hw: tuple[int, int], k: int, path: str) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=-(-hw[0] // k), min_width=-(-hw[1] // k)
        )
    except ValueError as exc:
        raise BadSampleError(path, f"corrupt or truncated JPEG ({exc})") from None


def decode_image(
    data: bytes | np.ndarray,
    *,
    path: str,
    target_size: int | None = None,
    decoder: Decoder = "auto",
    max_pixels: int | None = MAX_PIXELS,
) -> DecodedImage:
    """Decode JPEG or PNG bytes to an upright RGB uint8 image.

    Args:
        data: the encoded file (bytes or a uint8 array).
        path: the file's name, for error messages.
        target_size: the longest side the image will be resized to; enables reduced-size
            JPEG decoding when the source is at least twice as large. None: full size.
        decoder: ``auto`` (simplejpeg for JPEG, OpenCV for PNG), ``opencv`` or
            ``simplejpeg`` (JPEG only).
        max_pixels: largest width x height the header may declare (a decompression
            bomb guard, checked before any pixel is decoded); None: no limit.

    Returns:
        The decoded image with its orientation, stored size and reduction.

    Raises:
        BadSampleError: empty, not a JPEG/PNG, truncated or corrupt, a header declaring
            more than ``max_pixels`` pixels, or a PNG given to the ``simplejpeg`` decoder.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not raw:
        raise BadSampleError(path, "empty file (0 bytes)")
    fmt = image_format(raw)
    if fmt is None:
        raise BadSampleError(path, "not a JPEG or PNG file (unknown magic bytes)")
    if fmt == "png" and decoder == "simplejpeg":
        raise BadSampleError(path, "decoder 'simplejpeg' reads only JPEG; use 'auto' or 'opencv'")
    hw = _stored_hw(raw, fmt, path)
    if hw[0] <= 0 or hw[1] <= 0:
        raise BadSampleError(path, f"image header says size {hw[1]}x{hw[0]}")
    if max_pixels is not None and hw[0] * hw[1] > max_pixels:
        raise BadSampleError(
            path,
            f"image header declares {hw[1]}x{hw[0]} = {hw[0] * hw[1]:,} pixels, above the "
            f"limit of {max_pixels:,} (data.max_pixels; a decompression-bomb guard): not "
            "decoded",
        )
    k = choose_reduction(hw, target_size) if fmt == "jpeg" else 1
    if fmt == "jpeg" and decoder != "opencv":
        pixels = _decode_simplejpeg(raw, hw, k, path)
    else:
        pixels = _decode_opencv(raw, k, path)
    expect = (-(-hw[0] // k), -(-hw[1] // k))
    if pixels.shape[:2] != expect:
        raise BadSampleError(
            path, f"decoded size {pixels.shape[:2]} does not match the header ({expect})"
        )
    o = orient.read_orientation(raw)
    image = np.ascontiguousarray(orient.apply_to_image(pixels, o))
    return DecodedImage(image=image, orientation=o, stored_hw=hw, reduction=k)
