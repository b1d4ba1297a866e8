"""Every declared metric follows Prometheus naming conventions."""

from __future__ import annotations

import re

import pytest

from monitoring import metrics as m

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Units Prometheus asks to avoid in favour of the base unit.
_NON_BASE_UNITS = (
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "kibibytes",
    "mebibytes",
    "gibibytes",
    "percent",
    "bits",
)


@pytest.mark.parametrize("spec", m.ALL, ids=lambda s: s.name)
def test_name_follows_conventions(spec: m.MetricSpec) -> None:
    assert _NAME.match(spec.name)
    assert spec.name.startswith(f"{m.NAMESPACE}_")
    assert spec.name == spec.name.lower()
    assert spec.help.strip() and spec.help.endswith(".")
    words = spec.name.split("_")
    assert not set(words) & set(_NON_BASE_UNITS), f"{spec.name}: use base units"
    if spec.kind == "counter":
        assert spec.name.endswith("_total")
        assert spec.family == spec.name.removesuffix("_total")
    else:
        assert not spec.name.endswith("_total"), f"{spec.name}: _total is for counters"
        assert spec.family == spec.name
    if spec.kind == "histogram":
        assert spec.name.endswith("_seconds")
    for reserved in ("_bucket", "_count", "_sum", "_created", "_info"):
        assert not spec.name.endswith(reserved)
    if "bytes" in words or "seconds" in words:
        # The unit goes last (before _total on counters).
        assert spec.name.removesuffix("_total").endswith(("_bytes", "_seconds"))


@pytest.mark.parametrize("spec", m.ALL, ids=lambda s: s.name)
def test_labels_come_from_the_fixed_sets(spec: m.MetricSpec) -> None:
    assert len(set(spec.labels)) == len(spec.labels)
    for label in spec.labels:
        assert _LABEL.match(label) and not label.startswith("__")
        assert label in m.LABELS, f"{spec.name}: label {label!r} is not in metrics.LABELS"
        assert label not in ("le", "quantile", "job", "instance")


def test_every_name_is_declared_once() -> None:
    names = [s.name for s in m.ALL]
    assert len(names) == len(set(names))
    series = [name for s in m.ALL for name in s.series]
    assert len(series) == len(set(series))


def test_no_hit_ratio_gauge() -> None:
    # PromQL computes ratios from the request counters.
    assert not [s.name for s in m.ALL if "ratio" in s.name and "hit" in s.name]


def test_histogram_series_names() -> None:
    assert m.LOOKUP_SECONDS.series == (
        "adaptive_cache_lookup_seconds_bucket",
        "adaptive_cache_lookup_seconds_count",
        "adaptive_cache_lookup_seconds_sum",
    )
    assert m.REQUESTS.series == ("adaptive_cache_requests_total",)


def test_label_value_sets_match_the_stats_module() -> None:
    from adaptive_cache.stats import ALERT_LEVELS, EVICTION_REASONS

    assert m.LABELS["reason"] == EVICTION_REASONS
    assert m.LABELS["level"] == ALERT_LEVELS
    assert m.LABELS["result"] == ("hit", "miss")
