from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.data.annotations import (
    MAX_COORD,
    format_loc,
    is_degenerate,
    parse_icdar2015_dir,
    parse_icdar2015_file,
    parse_seed_json,
)

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]


def _write(tmp_path: Path, content: str | bytes, name: str = "train.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _seed(images: dict) -> str:
    return json.dumps({"images": images})


def test_seed_valid_file(tmp_path: Path) -> None:
    pentagon = [[0, 0], [4, 0], [5, 3], [2, 5], [-1, 3]]
    path = _write(
        tmp_path,
        _seed(
            {
                "b.jpg": {"words": {"0001": {"points": SQUARE, "text": "x", "other": [1]}}},
                "a.jpg": {"words": {"0001": {"points": pentagon}, "0002": {"points": SQUARE}}},
                "c.jpg": {"words": {}},
            }
        ),
    )
    ann = parse_seed_json(path)
    assert list(ann.images) == ["a.jpg", "b.jpg", "c.jpg"]
    a = ann.images["a.jpg"]
    assert len(a) == 2 and a.polygons[0].shape == (5, 2) and a.polygons[0].dtype == np.float32
    np.testing.assert_array_equal(a.polygons[0], np.float32(pentagon))
    assert a.ignore.dtype == bool and not a.ignore.any()
    assert len(ann.images["c.jpg"]) == 0
    assert ann.dropped == 0 and ann.bad == {}


@pytest.mark.parametrize(
    ("points", "where"),
    [
        ([[0, 0], [10, "0"], [10, 10], [0, 10]], ".points[1][1]"),
        ([[0, 0], [10, True], [10, 10], [0, 10]], ".points[1][1]"),
        ([[0, 0], [10, 1e400], [10, 10], [0, 10]], ".points[1][1]"),
        ([[0, 0], [10, 10**30], [10, 10], [0, 10]], ".points[1][1]"),
        ([[0, 0], [10, 2 * MAX_COORD], [10, 10], [0, 10]], ".points[1][1]"),
        ([[0, 0], [10, 0], [10, 10]], ".points"),
        ([[0, 0], [10, 0, 5], [10, 10], [0, 10]], ".points[1]"),
        ([[0, 0], [10], [10, 10], [0, 10]], ".points[1][1]"),
        ("0,0,1,1", ".points"),
        (None, ".points"),
    ],
)
def test_seed_bad_points_name_file_and_entry(tmp_path: Path, points, where: str) -> None:
    words = {"0001": {"points": SQUARE}, "0003": {"points": points}}
    path = _write(tmp_path, _seed({"a.jpg": {"words": words}}))
    with pytest.raises(ValueError) as err:
        parse_seed_json(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert f'images."a.jpg".words."0003"{where}:' in msg


def test_seed_nan_literal_rejected(tmp_path: Path) -> None:
    raw = '{"images": {"a.jpg": {"words": {"1": {"points": [[0, 0], [1, NaN], [1, 1], [0, 1]]}}}}}'
    with pytest.raises(ValueError, match=r"a\.jpg"):
        parse_seed_json(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("", "Invalid JSON"),
        ("{", "Invalid JSON"),
        ("[]", "Input should be"),
        ("{}", "images: Field required"),
        ('{"images": []}', "images: Input should be an object"),
        ('{"images": {"a.jpg": []}}', 'images."a.jpg": Input should be'),
        ('{"images": {"a.jpg": {"words": [1]}}}', 'images."a.jpg".words: Input should be'),
        ('{"images": {"a.jpg": {"words": {"1": {}}}}}', 'words."1".points: Field required'),
        ('{"images": ' + "[" * 10000 + "]" * 10000 + "}", "recursion limit"),
    ],
)
def test_seed_hostile_structure(tmp_path: Path, content: str, expect: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ValueError) as err:
        parse_seed_json(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_seed_not_utf8_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_seed_json(_write(tmp_path, b"\xff\xfe\x00garbage"))
    with pytest.raises(ValueError, match="cannot read annotation file"):
        parse_seed_json(tmp_path / "missing.json")


def test_seed_bom_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, ("\ufeff" + _seed({"a.jpg": {"words": {"1": {"points": SQUARE}}}})))
    assert len(parse_seed_json(path).images["a.jpg"]) == 1


def test_seed_lenient_skips_bad_entries(tmp_path: Path) -> None:
    images = {
        "good.jpg": {"words": {"1": {"points": SQUARE}}},
        "bad.jpg": {"words": {"1": {"points": [[0, 0], ["x", 1], [1, 1], [0, 1]]}}},
    }
    ann = parse_seed_json(_write(tmp_path, _seed(images)), strict=False)
    assert list(ann.images) == ["good.jpg"]
    assert (
        list(ann.bad) == ["bad.jpg"]
        and 'images."bad.jpg".words."1".points[1][0]' in (ann.bad["bad.jpg"])
    )


def test_degenerate_polygons_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    words = {
        "1": {"points": SQUARE},
        "2": {"points": [[0, 0], [5, 5], [10, 10], [2, 2]]},  # collinear: zero area
        "3": {"points": [[1, 1], [1, 1], [4, 4], [4, 4]]},  # two distinct points
        "4": {"points": [[3, 3]] * 4},
    }
    path = _write(tmp_path, _seed({"a.jpg": {"words": words}, "b.jpg": {"words": words}}))
    with caplog.at_level(logging.WARNING, logger="training.data.annotations"):
        ann = parse_seed_json(path)
    assert ann.dropped == 6
    assert [len(v) for v in ann.images.values()] == [1, 1]
    records = [r for r in caplog.records if "degenerate" in r.getMessage()]
    assert len(records) == 1 and "6" in records[0].getMessage()


def test_is_degenerate() -> None:
    assert not is_degenerate(np.float32(SQUARE))
    assert is_degenerate(np.float32([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert is_degenerate(np.float32([[0, 0], [0, 0], [1, 0], [1, 0]]))


def test_format_loc() -> None:
    assert format_loc(("images", "a.jpg", "words", "0003", "points", 1, 0)) == (
        'images."a.jpg".words."0003".points[1][0]'
    )


def _gt(tmp_path: Path, name: str, text: str, bom: bool = True) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_icdar_file_bom_dont_care_and_commas(tmp_path: Path) -> None:
    text = (
        "377,117,463,117,465,130,378,130,Genaxis Theatre\r\n"
        "493,115,519,115,519,131,493,131,[06]\r\n"
        "374,155,409,155,409,170,374,170,###\r\n"
        "\r\n"
        "10,10,50,10,50,30,10,30,1,234.50\r\n"
    )
    polys, dropped = parse_icdar2015_file(_gt(tmp_path, "gt_img_1.txt", text))
    assert dropped == 0 and len(polys) == 4
    np.testing.assert_array_equal(polys.polygons[0][0], [377, 117])
    assert polys.ignore.tolist() == [False, False, True, False]


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("1,2,3,4,5,6,7,word", "9 comma-separated fields"),
        ("1,2,3,x,5,6,7,8,word", "must be numbers"),
        ("1,2,3,nan,5,6,7,8,word", "finite number"),
        ("1,2,3,inf,5,6,7,8,word", "finite number"),
        ("1,2,3,1e300,5,6,7,8,word", "less than or equal"),
    ],
)
def test_icdar_bad_line_names_file_and_line(tmp_path: Path, line: str, expect: str) -> None:
    path = _gt(tmp_path, "gt_a.txt", "0,0,10,0,10,10,0,10,ok\n" + line + "\n")
    with pytest.raises(ValueError) as err:
        parse_icdar2015_file(path)
    assert f"{path}: line 2:" in str(err.value) and expect in str(err.value)


def test_icdar_dir_missing_file_strict_and_lenient(tmp_path: Path) -> None:
    _gt(tmp_path, "gt_a.txt", "0,0,10,0,10,10,0,10,ok\n")
    _gt(tmp_path, "gt_b.txt", "0,0,10,0,10,10,0,10\n")
    ann = parse_icdar2015_dir(tmp_path, ["a.jpg"])
    assert list(ann.images) == ["a.jpg"]
    with pytest.raises(ValueError, match=r"gt_missing\.txt"):
        parse_icdar2015_dir(tmp_path, ["a.jpg", "missing.png"])
    lenient = parse_icdar2015_dir(tmp_path, ["a.jpg", "b.jpg", "missing.png"], strict=False)
    assert list(lenient.images) == ["a.jpg"] and sorted(lenient.bad) == ["b.jpg", "missing.png"]
    with pytest.raises(ValueError, match="must be a directory"):
        parse_icdar2015_dir(tmp_path / "gt_a.txt", ["a.jpg"])


# tmp_path is reused across examples on purpose: each example overwrites the file.
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]
_coord = st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False, width=32)
_polygon = st.lists(st.tuples(_coord, _coord), min_size=4, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(polygons=st.lists(_polygon, max_size=6))
def test_seed_round_trips_valid_polygons(tmp_path: Path, polygons) -> None:
    words = {f"{i:04d}": {"points": [list(p) for p in poly]} for i, poly in enumerate(polygons)}
    ann = parse_seed_json(_write(tmp_path, _seed({"x.jpg": {"words": words}})))
    kept = [np.float32(p) for p in polygons if not is_degenerate(np.float32(p))]
    got = ann.images["x.jpg"].polygons
    assert ann.dropped == len(polygons) - len(kept)
    assert len(got) == len(kept)
    for a, b in zip(got, kept, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and a.shape[1] == 2 and np.isfinite(a).all()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=80, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(words=_json, points=_json)
def test_seed_arbitrary_json_parses_or_raises_value_error(tmp_path: Path, words, points) -> None:
    doc = {"images": {"a.jpg": {"words": {"1": {"points": points}, "2": words}}}}
    path = _write(tmp_path, json.dumps(doc, allow_nan=True))
    try:
        ann = parse_seed_json(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    for poly in ann.images["a.jpg"].polygons:
        assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 4
        assert all(math.isfinite(v) for v in poly.ravel())
