"""monitoring/prometheus/prometheus.yml scrapes a local run and loads the rules."""

from __future__ import annotations

import subprocess

import yaml

from monitoring.config import MonitoringConfig
from monitoring.rules import RULES_PATH

CONFIG = RULES_PATH.parent / "prometheus.yml"


def test_scrapes_the_default_exporter_address_and_loads_the_rules() -> None:
    doc = yaml.safe_load(CONFIG.read_text())
    defaults = MonitoringConfig()
    [job] = doc["scrape_configs"]
    assert job["job_name"] == defaults.job
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"][0]["targets"] == [f"{defaults.host}:{defaults.port}"]
    assert [(CONFIG.parent / p).resolve() for p in doc["rule_files"]] == [RULES_PATH.resolve()]


def test_promtool_check_config(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
