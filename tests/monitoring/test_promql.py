"""PromQL text helpers: metric names in an expression, the presence form."""

from __future__ import annotations

import pytest

from monitoring.promql import metric_names, presence_expr


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('up{job="adaptive-cache"} == 0', {"up"}),
        (
            'sum by (split, tier) (rate(a_total{result="hit", x=~"$job"}[5m])) / sum(b) by (le)',
            {"a_total", "b"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
        ("a / on (job) group_left (tier) b > 1e3", {"a", "b"}),
        ("rate(x[30m] offset 5m) and y unless z or w", {"x", "y", "z", "w"}),
        ('ALERTS{alertstate="firing", by="sum(q)"}', {"ALERTS"}),
        ("max_over_time(q[1h:5m]) > Inf", {"q"}),
        ('label_replace(v, "dst", "$1", "src", "(.*)")', {"v"}),
    ],
)
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="x"} == 0', 'up{job="x"} == bool 0'),
        ('a{reason!="invalid"} > 0.25 * b', 'a{reason!="invalid"} > bool 0.25 * b'),
        ("rate(a[30m] offset 5m) >= 0.25", "rate(a[30m]) >= bool 0.25"),
        ("a < bool 1", "a < bool 1"),
        ('a{x=~"y|z"} != 1 and b <= 2', 'a{x=~"y|z"} != bool 1 and b <= bool 2'),
    ],
)
def test_presence_expr(expr: str, expected: str) -> None:
    assert presence_expr(expr) == expected
