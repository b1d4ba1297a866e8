"""Fixtures of the monitoring tests: a real Prometheus server on a loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.prom_api import PrometheusAPI
from monitoring.rules import RULES_PATH

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    fn: Callable[[], Any],
    *,
    timeout: float,
    what: str = "condition",
    detail: Callable[[], str] = str,
    interval: float = 0.2,
) -> Any:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail()}")
        time.sleep(interval)


@dataclass
class PrometheusServer:
    """A running Prometheus: its URL, API client, process and log file."""

    url: str
    api: PrometheusAPI
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, expr: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one sample."""
        return wait_until(
            lambda: self.api.query(expr),
            timeout=timeout,
            what=f"data for {expr}",
            detail=lambda: f"Prometheus log:\n{self.log_tail()}",
        )


def _start(
    tmp: Path, target: str, job: str, rule_files: Sequence[Path], scrape_interval: str
) -> PrometheusServer:
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        server = PrometheusServer(url, PrometheusAPI(url, timeout=5.0), process, log_path)
        deadline = time.monotonic() + 30
        while process.poll() is None and not server.api.ready():
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"Prometheus not ready after 30s; log:\n{server.log_tail()}")
            time.sleep(0.1)
        if process.poll() is None:
            return server
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    pytest.fail(f"Prometheus exited with {process.returncode}; log:\n{server.log_tail()}")


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Start a real Prometheus scraping one target every second.

    Call it as ``prometheus_server("127.0.0.1:PORT", job="adaptive-cache",
    rule_files=[RULES_PATH], scrape_interval="1s")``; it is stopped after the test.
    Skips when the ``prometheus`` binary is not installed.
    """
    if not Path(PROMETHEUS).exists():
        pytest.skip(
            "prometheus binary not found: install Debian's 'prometheus' package (make system-deps)"
        )
    started: list[PrometheusServer] = []

    def start(
        target: str,
        *,
        job: str = "adaptive-cache",
        rule_files: Sequence[Path] = (RULES_PATH,),
        scrape_interval: str = "1s",
    ) -> PrometheusServer:
        tmp = tmp_path / f"prometheus-{len(started)}"
        tmp.mkdir()
        server = _start(tmp, target, job, rule_files, scrape_interval)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def promtool() -> str:
    """Path of promtool; skips when it is not installed."""
    if not Path(PROMTOOL).exists():
        pytest.skip("promtool not found: install Debian's 'prometheus' package (make system-deps)")
    return PROMTOOL
