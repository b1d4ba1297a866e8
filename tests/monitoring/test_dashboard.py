"""The Grafana dashboard and its provisioning files."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
import yaml

from monitoring import metrics as m
from monitoring.dashboard import (
    DASHBOARD_PATH,
    load_dashboard,
    panel_queries,
    substitute,
    variable_selectors,
)
from monitoring.promql import metric_names

GRAFANA = DASHBOARD_PATH.parents[1]
DECLARED = {name for spec in m.ALL for name in spec.series} | {"ALERTS"}


def test_every_query_is_substituted_and_names_declared_metrics() -> None:
    queries = panel_queries()
    assert len(queries) >= 12
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, f"{title}: {expr}"
        assert 'job=~".+"' in expr and 'instance=~".+"' in expr, f"{title} ignores $job/$instance"
        assert metric_names(expr) <= DECLARED, f"{title}: {metric_names(expr) - DECLARED}"
    for name, selector in variable_selectors():
        assert metric_names(selector) <= DECLARED, name


def test_the_panels_the_issue_asks_for() -> None:
    titles = {title for title, _ in panel_queries(main_only=True)}
    for wanted in (
        "Hit ratio per tier",
        "Bytes held vs budget vs headroom",
        "Evictions by reason",
        "Rebuild seconds saved",
        "Data-wait share of step time",
        "GPU memory",
        "Train and val loss",
        "Validation hmean, precision, recall",
        "Alerts (pending and firing)",
    ):
        assert wanted in titles
    hit_ratio = dict(panel_queries(main_only=True))["Hit ratio per tier"]
    assert "rate(adaptive_cache_tier_requests_total" in hit_ratio and "/" in hit_ratio
    assert "ALERTS" in dict(panel_queries())["Alerts (pending and firing)"]


def test_variables_and_rate_interval_are_substituted() -> None:
    queries = panel_queries(variables={"job": "adaptive-cache"}, rate_interval="30s")
    first = queries[0][1]
    assert 'job=~"adaptive-cache"' in first and "[30s]" in first
    assert len(panel_queries(main_only=True)) < len(queries)


def test_job_and_instance_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= set(variables)
    assert dict(variable_selectors())["instance"] == 'adaptive_cache_training_epoch{job=~".+"}'
    for panel in load_dashboard()["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_unknown_variable_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\$nope has no value"):
        substitute("up{job=~'$nope'}", {"job": "x"})


def test_not_a_dashboard_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"title": "no panels"}))
    with pytest.raises(ValueError, match=r"x\.json: expected a Grafana dashboard"):
        panel_queries(bad)


def test_datasource_provisioning_points_at_local_prometheus() -> None:
    files = list((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    assert len(files) == 1
    doc = yaml.safe_load(files[0].read_text())
    [source] = doc["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    assert doc["apiVersion"] == 1


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    files = list((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    assert len(files) == 1
    [provider] = yaml.safe_load(files[0].read_text())["providers"]
    assert provider["type"] == "file"
    # Grafana expands ${GF_PATHS_PROVISIONING} when it reads the file.
    env = {**os.environ, "GF_PATHS_PROVISIONING": str(GRAFANA / "provisioning")}
    path = Path(string.Template(provider["options"]["path"]).substitute(env)).resolve()
    assert path == DASHBOARD_PATH.parent.resolve()
    assert DASHBOARD_PATH.resolve() in [p.resolve() for p in path.glob("*.json")]
