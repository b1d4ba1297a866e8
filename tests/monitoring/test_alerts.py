"""AlertListener: memory alerts become a counter by level (and a debug line), no warning."""

from __future__ import annotations

import logging
import warnings

import pytest
from prometheus_client.registry import CollectorRegistry

from adaptive_cache.budget import MemoryAlert
from monitoring.alerts import AlertListener
from tests.monitoring.helpers import collect, value

GiB = 2**30


def _alert(level: str) -> MemoryAlert:
    return MemoryAlert(level, f"only 0.50 GiB of 16.00 GiB free ({level})", GiB // 2, 16 * GiB)


def test_an_alert_is_counted_and_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    # The engine logs each alert once, as a warning; a second warning here would double it.
    registry = CollectorRegistry()
    listener = AlertListener(registry)
    with caplog.at_level(logging.DEBUG, logger="monitoring.alerts"), warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would raise
        listener(_alert("critical"))
    assert "memory critical alert #1" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert listener.counts() == {"warning": 0, "critical": 1}
    s = collect(registry)
    assert value(s, "adaptive_cache_memory_alerts_total", level="critical") == 1
    assert value(s, "adaptive_cache_memory_alerts_total", level="warning") == 0


def test_counts_accumulate_per_level() -> None:
    listener = AlertListener()
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


def test_one_alert_of_a_cache_is_one_warning_line(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    # The engine logs it; the exporter's listener only counts it.
    from adaptive_cache.config import CacheConfig
    from adaptive_cache.engine import AdaptiveCache
    from adaptive_cache.memory import FakeProbe
    from adaptive_cache.pipeline import FunctionStage, Pipeline

    class Source:
        def __len__(self) -> int:
            return 4

        def sample_id(self, i: int) -> str:
            return str(i)

        def identity(self, i: int) -> str:
            return "1"

        def load(self, i: int) -> dict:
            return {"x": i}

    pipe = Pipeline(Source(), [FunctionStage("s", lambda s: s)], {"t": "s"})
    probe = FakeProbe(total_bytes=16 * GiB, available_bytes=12 * GiB)
    cfg = CacheConfig(store="local", probe_interval_s=0.0, reserve_bytes=0, max_bytes="1GiB")
    listener = AlertListener()
    with AdaptiveCache(pipe, cfg, name="val", probe=probe) as cache:
        cache.add_listener(listener)
        probe.set(host_available_bytes=GiB // 2)  # below the low watermark
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
            warnings.simplefilter("error")
            cache.get(0)
    alerts = sum(listener.counts().values())
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert alerts == 1 and len(warned) == 1
    assert warned[0].getMessage().startswith("val cache: ")
