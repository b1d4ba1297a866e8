"""Alert rules: promtool checks and unit tests pass; every rule is documented."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from monitoring import metrics as m
from monitoring.promql import metric_names
from monitoring.rules import RULES_PATH, alert_rules

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = RULES_PATH.parent / "tests"

EXPECTED = {
    "AdaptiveCacheMemoryHeadroomLow": {"warning", "critical"},
    "AdaptiveCacheGpuMemoryHeadroomLow": {"warning"},
    "AdaptiveCacheContainerMemoryNearLimit": {"warning"},
    "AdaptiveCacheOverBudget": {"warning"},
    "AdaptiveCacheHitRatioCollapsed": {"warning"},
    "AdaptiveCacheEvictionStorm": {"warning"},
    "AdaptiveCacheExporterDown": {"warning"},
}


def test_promtool_check_rules(promtool: str) -> None:
    # The exact command the Makefile runs, from the repository root.
    result = subprocess.run(
        [promtool, "check", "rules", "monitoring/prometheus/rules.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = sorted(str(p.relative_to(REPO)) for p in TESTS_DIR.glob("*.yml"))
    assert len(files) >= 3
    result = subprocess.run(
        [promtool, "test", "rules", *files], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_every_alert_is_unit_tested() -> None:
    tested = "".join(p.read_text() for p in TESTS_DIR.glob("*.yml"))
    for name in EXPECTED:
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"


def test_the_expected_alerts_with_their_severities() -> None:
    found: dict[str, set[str]] = {}
    for rule in alert_rules():
        found.setdefault(rule.name, set()).add(rule.severity)
    assert found == EXPECTED


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r.name}-{r.severity}")
def test_rule_is_documented_and_names_exported_metrics(rule) -> None:  # type: ignore[no-untyped-def]
    assert set(rule.annotations) >= {"summary", "description", "runbook"}
    runbook = rule.annotations["runbook"]
    assert runbook.strip() and "\n" not in runbook.strip()
    assert rule.for_ != "0s", "every alert waits before firing"
    declared = {name for spec in m.ALL for name in spec.series} | {"up"}
    assert metric_names(rule.expr) <= declared


def test_a_file_that_is_not_a_rules_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yml"
    bad.write_text("scrape_configs: []\n")
    with pytest.raises(ValueError, match=r"rules.yml: expected a Prometheus rules file"):
        alert_rules(bad)
