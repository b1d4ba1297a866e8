"""AlertListener: memory alerts become warnings, log lines and a counter by level."""

from __future__ import annotations

import logging
import warnings

import pytest
from prometheus_client.registry import CollectorRegistry

from adaptive_cache.budget import MemoryAlert
from monitoring.alerts import AlertListener, MemoryPressureWarning
from tests.monitoring.helpers import collect, value

GiB = 2**30


def _alert(level: str) -> MemoryAlert:
    return MemoryAlert(level, f"only 0.50 GiB of 16.00 GiB free ({level})", GiB // 2, 16 * GiB)


def test_an_alert_warns_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    listener = AlertListener(registry)
    with (
        caplog.at_level(logging.DEBUG, logger="monitoring.alerts"),
        pytest.warns(MemoryPressureWarning, match=r"memory critical: only 0\.50 GiB") as rec,
    ):
        listener(_alert("critical"))
    assert len(rec) == 1 and issubclass(rec[0].category, UserWarning)
    assert "memory critical alert #1" in caplog.text
    assert listener.counts() == {"warning": 0, "critical": 1}
    s = collect(registry)
    assert value(s, "adaptive_cache_memory_alerts_total", level="critical") == 1
    assert value(s, "adaptive_cache_memory_alerts_total", level="warning") == 0


def test_counts_accumulate_per_level() -> None:
    listener = AlertListener()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MemoryPressureWarning)
        for level in ("warning", "warning", "critical", "warning"):
            listener(_alert(level))
    assert listener.counts() == {"warning": 3, "critical": 1}


def test_other_events_are_ignored() -> None:
    listener = AlertListener()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would raise
        listener("epoch finished")
        listener(MemoryAlert("info", "not an alert level", 0, 0))
        listener(type("Evicted", (), {"level": "warning", "message": None})())
    assert listener.counts() == {"warning": 0, "critical": 0}


def test_the_warning_can_be_turned_into_an_error() -> None:
    listener = AlertListener()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryPressureWarning)
        with pytest.raises(MemoryPressureWarning):
            listener(_alert("warning"))
