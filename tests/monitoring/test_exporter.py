"""Exporter: /metrics over HTTP on loopback, promtool-clean, no leaks across epochs."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import torch
from prometheus_client.registry import CollectorRegistry
from torch.utils.data import DataLoader, Dataset

from adaptive_cache.memory import FakeProbe, GpuMemory, MemoryReading
from adaptive_cache.stats import CacheStats
from monitoring import metrics as m
from monitoring.config import MonitoringConfig
from monitoring.exporter import Exporter
from tests.monitoring.conftest import wait_until
from tests.monitoring.helpers import StatsHolder, example_stats, names, parse, scrape, value

GiB = 2**30


def _full_exporter(config: MonitoringConfig | None = None) -> Exporter:
    """Two caches of three tiers, a container, two GPUs and some training progress."""
    exporter = Exporter(config or MonitoringConfig(port=0))
    exporter.add_cache(StatsHolder("train", example_stats(1)))
    exporter.add_cache(StatsHolder("val", example_stats(2)))
    exporter.set_probe(
        FakeProbe(
            MemoryReading(
                host_total_bytes=64 * GiB,
                host_available_bytes=40 * GiB,
                container_limit_bytes=16 * GiB,
                container_high_bytes=15 * GiB,
                container_usage_bytes=10 * GiB,
                gpus=(GpuMemory(0, "A", 80 * GiB, 30 * GiB, 50 * GiB), GpuMemory(1, "B", 8, 4, 4)),
            )
        )
    )
    tm = exporter.training
    tm.observe_step(0.5, 0.125)
    tm.set_epoch(1)
    tm.set_global_step(10)
    tm.set_loss("train", 0.5)
    tm.set_loss("val", 0.75)
    tm.set_val_metrics(0.5, 0.5, 0.5)
    return exporter


def test_binds_to_loopback_by_default() -> None:
    assert MonitoringConfig().host == "127.0.0.1"
    with Exporter(MonitoringConfig(port=0)) as exporter:
        host, port = exporter.address or ("", 0)
        assert host == "127.0.0.1" and port > 0
        listening = [
            c
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
        assert "adaptive_cache_training_epoch" in scrape(host, port)
        # Reachable on loopback only: another address of this machine is refused.
        others = [
            a.address
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        ]
        for address in others[:1]:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()


def test_scrape_over_http_returns_the_cache_numbers() -> None:
    with _full_exporter() as exporter:
        samples = parse(scrape(*exporter.address))  # type: ignore[misc]
    hit = {"store": "shm", "result": "hit"}
    assert value(samples, "adaptive_cache_requests_total", split="train", **hit) == 750
    assert value(samples, "adaptive_cache_requests_total", split="val", **hit) == 1500
    assert value(samples, "adaptive_cache_container_memory_limit_bytes") == 16 * GiB
    assert value(samples, "adaptive_cache_gpu_memory_free_bytes", gpu="0") == 50 * GiB
    assert value(samples, "adaptive_cache_training_loss", split="val") == 0.75
    assert value(samples, "adaptive_cache_memory_alerts_total", level="warning") == 0
    assert value(samples, "process_open_fds") > 0  # the default registry's process metrics


def test_promtool_check_metrics_finds_nothing(promtool: str) -> None:
    with _full_exporter() as exporter:
        text = scrape(*exporter.address)  # type: ignore[misc]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""


def test_serves_exactly_the_declared_metrics() -> None:
    with _full_exporter() as exporter:
        served = {n for n in names(parse(scrape(*exporter.address))) if n.startswith("adaptive")}  # type: ignore[misc]
    declared = {name for spec in m.ALL for name in spec.series}
    # prometheus_client adds a _created sample to the histograms it instruments itself.
    created = {f"{s.name}_created" for s in (m.STEP_SECONDS, m.DATA_WAIT_SECONDS)}
    assert served - created == declared


@dataclass
class _CacheWithListeners(StatsHolder):
    """The engine's optional extras: listeners for alerts and a memory probe."""

    probe: FakeProbe = field(default_factory=lambda: FakeProbe(available_bytes=2 * GiB))
    listeners: list[Callable[[object], None]] = field(default_factory=list)

    def add_listener(self, fn: Callable[[object], None]) -> None:
        self.listeners.append(fn)


def test_add_cache_attaches_the_alert_listener_and_takes_the_probe() -> None:
    cache = _CacheWithListeners("train")
    exporter = Exporter(MonitoringConfig(port=0), CollectorRegistry())
    exporter.add_cache(cache)
    assert cache.listeners == [exporter.alerts]
    samples = parse(_generate(exporter))
    assert value(samples, "adaptive_cache_host_memory_available_bytes") == 2 * GiB
    # An explicit probe wins over a cache's.
    exporter.set_probe(FakeProbe(available_bytes=3 * GiB))
    exporter.add_cache(_CacheWithListeners("val"))
    samples = parse(_generate(exporter))
    assert value(samples, "adaptive_cache_host_memory_available_bytes") == 3 * GiB


def _generate(exporter: Exporter) -> str:
    from prometheus_client import generate_latest

    return generate_latest(exporter.registry).decode()


def test_start_stop_and_errors() -> None:
    exporter = Exporter(MonitoringConfig(port=0))
    host, port = exporter.start()
    with pytest.raises(RuntimeError, match="already serving"):
        exporter.start()
    # Another exporter on the same port (a second run) is told how to get one of its own.
    with pytest.raises(OSError) as err:
        Exporter(MonitoringConfig(port=port)).start()
    assert err.value.strerror.startswith(f"monitoring.port={port}: cannot serve /metrics")
    assert "monitoring.port=0" in err.value.strerror and "\n" not in err.value.strerror
    exporter.stop()
    assert exporter.address is None
    with pytest.raises(urllib.error.URLError):
        scrape(host, port)
    exporter.stop()  # a second stop is harmless
    # The port is released: a new exporter can take it.
    with Exporter(MonitoringConfig(port=port)) as again:
        assert again.address == (host, port)
    with pytest.raises(RuntimeError, match=r"monitoring\.enabled is false"):
        Exporter(MonitoringConfig(enabled=False)).start()
    with pytest.raises(TypeError, match="MonitoringConfig"):
        Exporter({"port": 0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read"):
        exporter.set_probe(object())  # type: ignore[arg-type]


class _Numbers(Dataset):
    """A trivial dataset: index -> a small tensor."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((4,), float(index))


def _shm_entries() -> set[str]:
    # Shared-memory names that torch tensors, multiprocessing semaphores and
    # multiprocessing.shared_memory segments use; other programs' entries are ignored.
    prefixes = ("torch_", "sem.", "psm_", "prometheus")
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


def _resources() -> dict[str, object]:
    proc = psutil.Process()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "os_threads": proc.num_threads(),
        "children": len(proc.children(recursive=True)),
        "shm": _shm_entries(),
    }


@pytest.mark.slow
def test_no_growth_after_50_epochs_of_non_persistent_workers(tmp_path: Path) -> None:
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # never multiprocess mode
    cache = StatsHolder("train", CacheStats())
    exporter = Exporter(MonitoringConfig(port=0))
    exporter.add_cache(cache)
    host, port = exporter.start()
    loader = DataLoader(_Numbers(), batch_size=16, num_workers=2, persistent_workers=False)

    def epoch(e: int) -> None:
        exporter.training.set_epoch(e)
        for batch in loader:  # workers start here and exit when the epoch ends
            cache.current.requests += len(batch)
            cache.current.hits += len(batch) // 2
            exporter.training.observe_step(0.01, 0.005)
        text = scrape(host, port)
        assert f"adaptive_cache_training_epoch {float(e)}" in text

    try:
        for e in range(3):  # warm-up: imports, first allocations, server threads
            epoch(e)
        before = _resources()
        rss_before = psutil.Process().memory_info().rss
        for e in range(3, 53):
            epoch(e)
        # Handler threads of the last scrape may still be finishing: poll.
        after = wait_until(
            lambda: (
                (r := _resources())["threads"] <= before["threads"]
                # A Python thread is gone from threading before its OS thread exits.
                and r["os_threads"] <= before["os_threads"]
                and r["children"] <= before["children"]
                and r
            ),
            timeout=10,
            what="scrape handler threads and the last workers to finish",
        )
        rss_growth = psutil.Process().memory_info().rss - rss_before
    finally:
        exporter.stop()
    assert after["fds"] <= before["fds"]  # no growth (a closing worker may still hold one before)
    assert after["os_threads"] <= before["os_threads"]
    # No worker outlives its epoch (servers other tests started may be children too).
    assert after["children"] == before["children"]
    assert after["shm"] - before["shm"] == set()
    assert rss_growth < 16 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB over 50 epochs"
    assert cache.current.requests == 53 * 64


def test_a_non_loopback_host_warns_that_metrics_are_unauthenticated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for host, warned in (("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)):
        caplog.clear()
        with (
            caplog.at_level("WARNING", logger="monitoring.exporter"),
            Exporter(MonitoringConfig(host=host, port=0)),
        ):
            pass
        messages = [r.getMessage() for r in caplog.records]
        assert any("without authentication" in m for m in messages) == warned, (host, messages)


def test_a_forked_child_does_not_keep_the_listening_socket() -> None:
    with Exporter(MonitoringConfig(port=0)) as exporter:
        sock = exporter._server.socket
        ident = os.fstat(sock.fileno()).st_ino
        assert not sock.get_inheritable()  # spawned processes never get it either
        pid = os.fork()
        if pid == 0:  # the child, as a forked DataLoader worker
            try:
                still_open = os.fstat(sock.fileno()).st_ino == ident
            except (OSError, ValueError):
                still_open = False
            os._exit(1 if still_open else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent still serves.
        assert "adaptive_cache_" in scrape(*exporter.address)
