"""Pure parts of monitoring/plot.py; the full figure against a real Prometheus is in
test_end_to_end.py."""

import math

import pytest

from monitoring.plot import _epoch_starts, _isolated, _points, _scale, parse_time


def test_points_leave_a_gap_where_samples_are_missing():
    # A range query returns no point where the series was absent (an alert that
    # resolved); the plot must not join 20 and 50 with a line.
    xs, ys = _points([[10, "1"], [20, "1"], [50, "1"], [60, "NaN"]], step=10)
    assert xs[:3] == [10.0, 20.0, 30.0]
    assert math.isnan(ys[2])
    assert xs[3:] == [50.0, 60.0] and ys[3] == 1.0 and math.isnan(ys[4])


def test_points_without_gaps_are_unchanged():
    xs, ys = _points([[0, "0.5"], [2, "0.25"], [4, "+Inf"]], step=2)
    assert xs == [0.0, 2.0, 4.0]
    assert ys[:2] == [0.5, 0.25] and ys[2] == math.inf


def test_isolated_points_are_the_ones_a_line_would_hide():
    nan = math.nan
    assert _isolated([1.0, nan, 2.0, 3.0, nan, 4.0]) == [0, 5]
    assert _isolated([nan, 5.0, nan]) == [1]
    assert _isolated([1.0, 2.0]) == []


def test_epoch_starts_are_where_the_value_changes():
    result = [{"metric": {}, "values": [[0, "0"], [5, "0"], [10, "1"], [15, "1"], [20, "3"]]}]
    assert _epoch_starts(result) == [(0.0, 0), (10.0, 1), (20.0, 3)]
    assert _epoch_starts([]) == []


@pytest.mark.parametrize(
    ("unit", "peak", "expected"),
    [
        ("bytes", 12 * 2**20, (2**20, "MiB")),
        ("bytes", 20 * 2**30, (2**30, "GiB")),
        ("s", 0.02, (1e-3, "ms")),
        ("s", 1.7, (1.0, "s")),
        ("percentunit", 0.4, (0.01, "%")),
        ("short", 300.0, (1.0, "")),
    ],
)
def test_scale_picks_a_readable_unit(unit, peak, expected):
    assert _scale(unit, peak) == expected


def test_parse_time_forms_and_errors():
    assert parse_time("now", now=1000.0) == 1000.0
    assert parse_time("-2m", now=1000.0) == 880.0
    assert parse_time("1795640215") == 1795640215.0
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_time("yesterday")
