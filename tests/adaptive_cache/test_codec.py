"""Samples <-> bytes without pickle."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adaptive_cache import codec
from tests.adaptive_cache.torchvision_import import torchvision_or_skip

_dtypes = st.sampled_from(
    [np.uint8, np.int32, np.float32, np.float64, np.bool_, np.int64, np.uint16]
)
_TORCH_DTYPES = [
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool,
    torch.complex64, torch.complex128,
]  # fmt: skip


def assert_same(a, b, path="sample"):
    """Same types all the way down, arrays and tensors equal bit for bit."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert _bits(a) == _bits(b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


_arrays = hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
_tensors = st.builds(
    lambda a, dtype: torch.from_numpy(a.astype(np.float64)).to(dtype),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
               elements=st.floats(-100, 100)),
    st.sampled_from(_TORCH_DTYPES),
)  # fmt: skip
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.binary(max_size=8),
    _arrays,
    _tensors,
    st.builds(np.float32, st.floats(-10, 10, width=32)),
    st.builds(np.int64, st.integers(-(2**40), 2**40)),
)
_trees = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.just("__a"), st.integers(0, 5)), inner, max_size=3
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _trees, max_size=4))
def test_round_trip_of_nested_samples(sample):
    assert_same(codec.decode(codec.encode(sample)), sample)


@given(
    arrays=st.dictionaries(st.text(min_size=1, max_size=8), _arrays, max_size=4),
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
def test_round_trip_of_flat_samples(arrays, meta):
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
    assert not codec.decode(bytes(buf))["x"].flags.writeable  # read-only like its buffer


def test_tensors_come_back_as_tensors_sharing_the_buffer():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    buf = bytearray(codec.encode({"t": t, "pair": (t[0], 7)}))
    out = codec.decode(buf)
    assert type(out["t"]) is torch.Tensor and out["t"].dtype == torch.float32
    assert torch.equal(out["t"], t) and out["pair"][1] == 7
    base = np.frombuffer(buf, dtype=np.uint8).ctypes.data
    assert base <= out["t"].data_ptr() < base + len(buf)  # a view, not a copy


@pytest.mark.parametrize("dtype", _TORCH_DTYPES, ids=str)
def test_every_tensor_dtype_keeps_dtype_shape_and_bits(dtype):
    t = (torch.arange(-6, 18).reshape(2, 3, 4) * 1.5).to(dtype)
    out = codec.decode(codec.encode({"t": t, "nc": t.transpose(0, 2), "zero_d": t[0, 0, 0]}))
    for name, ref in (("t", t), ("nc", t.transpose(0, 2)), ("zero_d", t[0, 0, 0])):
        assert out[name].dtype == dtype and out[name].shape == ref.shape
        assert _bits(out[name]) == _bits(ref)


def test_non_contiguous_array_is_encoded_in_order():
    a = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(codec.decode(codec.encode({"a": a}))["a"], a)


def test_numpy_scalars_bytes_and_tagged_keys_keep_their_types():
    sample = {
        "s": np.float32(1.5),
        "b": b"\x00raw",
        "odd_keys": {"__a": 1, 3: "three", (1, 2): [()]},
        "nan": [float("nan"), float("inf"), -0.0],
    }
    assert_same(codec.decode(codec.encode(sample)), sample)


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"meta": [1, 2, object()]}, r"sample\['meta'\]\[2\]: cannot store <class 'object'>"),
        ({"x": np.array([object()])}, r"sample\['x'\]: array of dtype object"),
        ({"d": {"k": {"deeper": {1, 2}}}}, r"sample\['d'\]\['k'\]\['deeper'\]: cannot store"),
        ({"t": torch.zeros(2, device="meta")}, r"sample\['t'\]: .*only dense CPU tensors"),
        ({"t": torch.zeros(3, 3).to_sparse()}, r"sample\['t'\]: .*only dense CPU"),
        ({"p": torch.nn.Parameter(torch.zeros(2))}, r"sample\['p'\]: .*tensor subclass"),
        ({"n": np.str_("a")}, r"sample\['n'\]: cannot store"),
        ({1: np.zeros(2)}, "field names must be str"),
    ],
)
def test_what_cannot_be_stored_is_a_codec_error_naming_the_field(sample, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.encode(sample)


def test_a_pil_image_is_refused_by_name():
    from PIL import Image

    img = Image.new("RGB", (4, 4))
    with pytest.raises(codec.CodecError, match=r"sample\['meta'\]\[2\]: .*PIL"):
        codec.encode({"meta": [0, 1, img]})


def test_a_cycle_is_a_codec_error():
    loop: list = []
    loop.append(loop)
    with pytest.raises(codec.CodecError, match="nested more than"):
        codec.encode({"loop": loop})


def test_tv_tensors_keep_their_class_and_metadata():
    torchvision_or_skip()
    from torchvision import tv_tensors

    sample = {
        "image": tv_tensors.Image(torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)),
        "mask": tv_tensors.Mask(torch.zeros(8, 8, dtype=torch.uint8)),
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[1.0, 2.0, 5.0, 6.0]]), format="XYWH", canvas_size=(8, 8)
        ),
    }
    out = codec.decode(codec.encode(sample))
    for name, value in sample.items():
        assert type(out[name]) is type(value) and torch.equal(out[name], value)
    assert out["boxes"].format == sample["boxes"].format
    assert tuple(out["boxes"].canvas_size) == (8, 8)


def test_encoded_size_estimate_bounds_the_real_size():
    sample = {
        "image": np.zeros((640, 640, 3), np.uint8),
        "gt": torch.zeros((640, 640), dtype=torch.uint8),
        "nested": {"a": [np.zeros(10, np.float32), b"xyz"], "name": "a.jpg"},
        "name": "a.jpg",
    }
    assert codec.encoded_size(sample) >= len(codec.encode(sample))


@pytest.mark.parametrize(
    "buf",
    [b"", b"ACS1", b"XXXX\x00\x00\x00\x00", b"ACS1\xff\x00\x00\x00{}", b"ACS1\x02\x00\x00\x00{]"],
)
def test_garbage_is_a_codec_error(buf):
    with pytest.raises(codec.CodecError):
        codec.decode(buf)


def test_truncated_buffer_is_a_codec_error():
    for value in (np.ones((64, 64), np.float32), torch.ones(64, 64)):
        data = codec.encode({"x": value})
        with pytest.raises(codec.ChecksumError):
            codec.decode(data[:-10])


@pytest.mark.parametrize("where", ["header", "array", "last"])
def test_any_flipped_byte_after_the_prefix_fails_the_checksum(where):
    data = codec.encode({"x": np.ones((64, 64), np.float32), "name": "a.jpg"})
    pos = {"header": 20, "array": len(data) // 2, "last": len(data) - 1}[where]
    data[pos] ^= 0x01
    with pytest.raises(codec.ChecksumError, match="checksum"):
        codec.decode(data)


def _with_header(header: dict, body: bytes = bytes(128)) -> bytes:
    """A buffer with a valid prefix and checksum around a hand-made header."""
    rest = json.dumps(header).encode() + body
    return struct.pack("<4sIQ", codec.MAGIC, len(rest) - len(body), codec.checksum(rest)) + rest


def test_a_sealed_buffer_that_runs_past_its_end_is_a_codec_error():
    header = {"f": [["n", "<f4", [1000], 0]], "m": {"x": {"__a": 0}}, "r": ["x"]}
    with pytest.raises(codec.CodecError, match="past the end"):
        codec.decode(_with_header(header))


@pytest.mark.parametrize(
    "field",
    [
        ["n", "<f4", "abc", 0],
        ["n", "<f4", [-1], 0],
        ["n", "not-a-dtype", [1], 0],
        ["n", "|O", [1], 0],
        ["n", "<f4", [1], -64],
        ["t", "not_a_dtype", [1], 0],
        ["t", "qint8", [1], 0],
        ["t", "float32", [1], 0, {"cls": "os.system"}],
        ["?", "<f4", [1], 0],
        "not-a-list",
    ],
)
def test_hostile_header_fields_are_codec_errors(field):
    with pytest.raises(codec.CodecError) as info:
        codec.decode(_with_header({"f": [field], "m": {"x": {"__a": 0}}, "r": ["x"]}))
    assert not isinstance(info.value, codec.ChecksumError)


@pytest.mark.parametrize(
    "tree",
    [
        {"x": {"__a": 5}},
        {"x": {"__a": "0"}},
        {"x": {"__d": [[[1], 2]]}},
        {"x": {"__d": 3}},
        {"x": {"__t": 3}},
    ],
)
def test_hostile_header_trees_are_codec_errors(tree):
    with pytest.raises(codec.CodecError):
        codec.decode(_with_header({"f": [["n", "<f4", [1], 0]], "m": tree, "r": ["x"]}))
