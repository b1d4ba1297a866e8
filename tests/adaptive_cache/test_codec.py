"""Samples <-> bytes without pickle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adaptive_cache import codec

_dtypes = st.sampled_from(
    [np.uint8, np.int32, np.float32, np.float64, np.bool_, np.int64, np.uint16]
)


@given(
    arrays=st.dictionaries(
        st.text(min_size=1, max_size=8),
        hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
        max_size=4,
    ),
    meta=st.dictionaries(
        st.text(max_size=8).map(lambda s: "m_" + s),
        st.one_of(
            st.integers(-(2**40), 2**40),
            st.text(max_size=10),
            st.lists(st.integers(0, 9), max_size=4),
        ),
        max_size=3,
    ),
)
def test_round_trip(arrays, meta):
    sample = {**arrays, **meta}
    out = codec.decode(codec.encode(sample))
    assert set(out) == set(sample)
    for name, arr in arrays.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        np.testing.assert_array_equal(out[name], arr)
    for name, value in meta.items():
        assert out[name] == value


def test_decode_is_zero_copy_view():
    buf = bytearray(codec.encode({"x": np.arange(1000, dtype=np.int32)}))
    out = codec.decode(buf)
    assert np.shares_memory(out["x"], np.frombuffer(buf, dtype=np.uint8))


def test_non_contiguous_array_is_encoded_in_order():
    a = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(codec.decode(codec.encode({"a": a}))["a"], a)


@pytest.mark.parametrize(
    "buf",
    [b"", b"ACS1", b"XXXX\x00\x00\x00\x00", b"ACS1\xff\x00\x00\x00{}", b"ACS1\x02\x00\x00\x00{]"],
)
def test_garbage_is_a_codec_error(buf):
    with pytest.raises(codec.CodecError):
        codec.decode(buf)


def test_truncated_buffer_is_a_codec_error():
    data = codec.encode({"x": np.ones((64, 64), np.float32)})
    with pytest.raises(codec.ChecksumError):
        codec.decode(data[:-10])


@pytest.mark.parametrize("where", ["header", "array", "last"])
def test_any_flipped_byte_after_the_prefix_fails_the_checksum(where):
    data = codec.encode({"x": np.ones((64, 64), np.float32), "name": "a.jpg"})
    pos = {"header": 20, "array": len(data) // 2, "last": len(data) - 1}[where]
    data[pos] ^= 0x01
    with pytest.raises(codec.ChecksumError, match="checksum"):
        codec.decode(data)


def _sealed(header: bytes, body: bytes = b"") -> bytes:
    """A buffer with a valid prefix and checksum around a hand-made header."""
    import struct

    rest = header + body
    return struct.pack("<4sIQ", codec.MAGIC, len(header), codec.checksum(rest)) + rest


def test_a_sealed_buffer_that_runs_past_its_end_is_a_codec_error():
    import json

    header = json.dumps({"f": [["x", "<f4", [1000], 0]], "m": {}}).encode()
    with pytest.raises(codec.CodecError, match="past the end"):
        codec.decode(_sealed(header, bytes(128)))


def test_object_arrays_and_unserialisable_meta_are_refused():
    with pytest.raises(TypeError, match="numeric"):
        codec.encode({"x": np.array([object()])})
    with pytest.raises(TypeError, match="JSON"):
        codec.encode({"x": object()})


def test_encoded_size_estimate_bounds_the_real_size():
    sample = {
        "image": np.zeros((640, 640, 3), np.uint8),
        "gt": np.zeros((640, 640), np.uint8),
        "name": "a.jpg",
    }
    assert codec.encoded_size(sample) >= len(codec.encode(sample))


@pytest.mark.parametrize(
    "field",
    [
        ["x", "<f4", "abc", 0],
        ["x", "<f4", [-1], 0],
        ["x", "not-a-dtype", [1], 0],
        ["x", "|O", [1], 0],
    ],
)
def test_hostile_header_fields_are_codec_errors(field):
    import json

    header = json.dumps({"f": [field], "m": {}}).encode()
    with pytest.raises(codec.CodecError) as info:
        codec.decode(_sealed(header, bytes(128)))
    assert not isinstance(info.value, codec.ChecksumError)
