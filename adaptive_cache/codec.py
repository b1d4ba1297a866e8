"""Samples <-> bytes without pickle.

A sample is a dict of numpy arrays plus JSON-serialisable metadata. The encoding is a
16-byte prefix (magic, header length, checksum), a small JSON header (array names,
dtypes, shapes, offsets and the metadata) and the raw array bytes, each aligned to 64
bytes. Decoding returns arrays that are views into the buffer (no copy); nothing read
back from a store is ever unpickled, and a truncated, corrupt or foreign buffer raises
:class:`CodecError` so callers can treat it as a miss.

The checksum is xxh3-64 of every byte after the prefix (header and arrays), verified by
every :func:`decode`: a flipped bit anywhere in an entry is a miss, never wrong pixels.
Measured on the 2-core reference container, hashing a 2 MiB entry costs about 35 us
(57 GiB/s; zlib's crc32 takes 530 us), against about 1 ms to read it from disk.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from typing import Any

import numpy as np
import xxhash

MAGIC = b"ACS2"
_HEADER = struct.Struct("<4sIQ")  # magic, header length, xxh3-64 of the rest
_ALIGN = 64
_ALLOWED_KINDS = set("biufc")  # bool, int, uint, float, complex: no object arrays


class CodecError(ValueError):
    """A buffer is not a valid encoded sample (truncated, corrupt or another format)."""


class ChecksumError(CodecError):
    """The bytes after the prefix do not match the checksum it records (corrupt entry)."""


def checksum(buf: bytes | bytearray | memoryview) -> int:
    """xxh3-64 of ``buf`` (what the prefix records for the bytes after it)."""
    return xxhash.xxh3_64_intdigest(buf)


def _seal(out: bytearray) -> bytearray:
    """Record the checksum of everything after the prefix, in the prefix."""
    with memoryview(out) as mv:
        digest = checksum(mv[_HEADER.size :])
    _HEADER.pack_into(out, 0, MAGIC, _HEADER.unpack_from(out, 0)[1], digest)
    return out


def _verify(mv: memoryview, expected: int) -> None:
    if checksum(mv[_HEADER.size :]) != expected:
        raise ChecksumError(f"codec: checksum mismatch in a buffer of {mv.nbytes} bytes")


@functools.lru_cache(maxsize=64)
def _dtype(dtype_str: str) -> np.dtype:
    try:
        return np.dtype(dtype_str)
    except TypeError:
        raise CodecError(f"codec: unknown dtype {dtype_str!r}") from None


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def encode(sample: dict[str, Any]) -> bytearray:
    """Encode a sample; arrays become raw bytes, everything else JSON metadata.

    Raises:
        TypeError: a value is neither a numeric numpy array nor JSON-serialisable.
    """
    arrays: list[tuple[str, np.ndarray]] = []
    meta: dict[str, Any] = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _ALLOWED_KINDS:
                raise TypeError(
                    f"codec: array {name!r} has dtype {value.dtype}; only numeric arrays"
                )
            arrays.append((name, value if value.flags.c_contiguous else value.copy(order="C")))
        else:
            meta[name] = value
    fields = []
    offset = 0
    for name, arr in arrays:
        fields.append([name, arr.dtype.str, list(arr.shape), offset])
        offset += arr.nbytes + _pad(arr.nbytes)
    try:
        header = json.dumps({"f": fields, "m": meta}, separators=(",", ":")).encode()
    except TypeError as exc:
        raise TypeError(f"codec: sample metadata is not JSON-serialisable: {exc}") from None
    head_len = _HEADER.size + len(header)
    data_start = head_len + _pad(head_len)
    out = bytearray(data_start + offset)
    _HEADER.pack_into(out, 0, MAGIC, len(header), 0)
    out[_HEADER.size : head_len] = header
    body = np.frombuffer(out, dtype=np.uint8)
    for (_, arr), (_, _, _, off) in zip(arrays, fields, strict=True):
        start = data_start + off
        body[start : start + arr.nbytes] = arr.reshape(-1).view(np.uint8)
    return _seal(out)


def encoded_size(sample: dict[str, Any]) -> int:
    """Bytes the encoding of ``sample`` takes, without encoding it (header estimated)."""
    total = 256
    for value in sample.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes + _pad(value.nbytes) + 64
    return total


def decode(buf: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a buffer made by :func:`encode`; arrays are read-only views into ``buf``.

    Raises:
        ChecksumError: the bytes do not match the checksum recorded when encoding.
        CodecError: the buffer is truncated, corrupt or not an encoded sample.
    """
    mv = memoryview(buf)
    if mv.nbytes < _HEADER.size:
        raise CodecError(f"codec: buffer of {mv.nbytes} bytes is too short")
    magic, hlen, digest = _HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CodecError(f"codec: bad magic {magic!r}")
    _verify(mv, digest)
    head_end = _HEADER.size + hlen
    if head_end > mv.nbytes:
        raise CodecError("codec: truncated header")
    try:
        header = json.loads(bytes(mv[_HEADER.size : head_end]))
        fields = header["f"]
        meta = header["m"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CodecError(f"codec: corrupt header: {exc}") from None
    data_start = head_end + _pad(head_end)
    out: dict[str, Any] = dict(meta)
    for name, dtype_str, shape, off in fields:
        dtype = _dtype(dtype_str)
        if dtype.kind not in _ALLOWED_KINDS:
            raise CodecError(f"codec: field {name!r} has forbidden dtype {dtype_str}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CodecError(f"codec: field {name!r} has a bad shape {shape!r}")
        # math.prod, not np.prod: this is the hit path (np.prod costs ~30x more here).
        count = math.prod(shape)
        start = data_start + int(off)
        stop = start + count * dtype.itemsize
        if start < data_start or stop > mv.nbytes:
            raise CodecError(f"codec: field {name!r} runs past the end of the buffer")
        arr = np.frombuffer(mv[start:stop], dtype=dtype).reshape(tuple(shape))
        out[name] = arr
    return out
