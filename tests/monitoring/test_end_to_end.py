"""End to end: a real Prometheus scrapes a real exporter fed by a real cache run.

Two AdaptiveCaches (train with a random flip after the cached prefix, val without)
serve PNG files to a small numpy model trained in a background thread; the trainer
side drives TrainingMetrics with the measured step and data-wait times, losses and
validation scores. After warm-up the (fake) memory probe reports a container close to
its limit and Prometheus's memory rules go pending. Then every dashboard query and
every alert expression must return data through the HTTP API, and none may name a
metric the exporter does not serve.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from adaptive_cache.config import CacheConfig
from adaptive_cache.engine import AdaptiveCache
from adaptive_cache.memory import FakeProbe, GpuMemory, MemoryReading
from adaptive_cache.pipeline import FunctionStage, Pipeline, Sample
from adaptive_cache.sources import FileSource
from monitoring.config import MonitoringConfig
from monitoring.dashboard import panel_queries, variable_selectors
from monitoring.exporter import Exporter
from monitoring.plot import plot_dashboard
from monitoring.promql import metric_names, presence_expr
from monitoring.rules import alert_rules
from monitoring.training_metrics import TrainingMetrics
from tests.monitoring.conftest import wait_until
from tests.monitoring.helpers import names, parse, scrape

pytestmark = [pytest.mark.slow]

GiB = 2**30
N_TRAIN, N_VAL = 24, 8


def _decode(s: Sample) -> Sample:
    return {"image": cv2.imdecode(s["data"], cv2.IMREAD_COLOR)}


def _resize(s: Sample) -> Sample:
    return {"image": cv2.resize(s["image"], (32, 32), interpolation=cv2.INTER_AREA)}


def _flip(s: Sample, rng: np.random.Generator) -> Sample:
    image = s["image"]
    return {"image": np.ascontiguousarray(image[:, ::-1]) if rng.random() < 0.5 else image}


def _pipeline(paths: list[Path], *, random: bool) -> Pipeline:
    stages = [FunctionStage("decode", _decode), FunctionStage("resize", _resize)]
    if random:
        stages.append(FunctionStage("flip", _flip, deterministic=False, uses_rng=True))
    return Pipeline(FileSource(paths), stages, tiers={"image": "decode", "small": "resize"})


def _write_images(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir()
    paths = []
    for i in range(N_TRAIN + N_VAL):
        brightness = rng.uniform(40, 215)
        img = np.clip(rng.normal(brightness, 30, size=(64, 64, 3)), 0, 255).astype(np.uint8)
        paths.append(root / f"{i:03d}.png")
        cv2.imwrite(str(paths[-1]), img)
    return paths


def _probe_reading(usage_gib: float) -> MemoryReading:
    return MemoryReading(
        host_total_bytes=16 * GiB,
        host_available_bytes=10 * GiB,
        container_limit_bytes=12 * GiB,
        container_high_bytes=None,
        container_usage_bytes=int(usage_gib * GiB),
        gpus=(GpuMemory(0, "fake", 16 * GiB, 4 * GiB, 12 * GiB),),
    )


class _Run:
    """Trains a linear model (mean colour -> brightness) on samples from the caches."""

    def __init__(self, train: AdaptiveCache, val: AdaptiveCache, tm: TrainingMetrics) -> None:
        self.train, self.val, self.tm = train, val, tm
        self.w = np.zeros(4)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="e2e-run", daemon=True)

    @staticmethod
    def _xy(sample: Sample) -> tuple[np.ndarray, float]:
        img = sample["image"].astype(np.float64) / 255.0  # (32, 32, 3)
        return np.append(img.mean(axis=(0, 1)), 1.0), float(img.mean())

    def _loop(self) -> None:
        try:
            step, epoch, last = 0, 0, time.perf_counter()
            while not self.stop.is_set():
                self.tm.set_epoch(epoch)
                losses = []
                for i in np.random.default_rng(epoch).permutation(N_TRAIN):
                    t0 = time.perf_counter()
                    x, y = self._xy(self.train.get(int(i), epoch))
                    waited = time.perf_counter() - t0
                    err = x @ self.w - y
                    self.w -= 0.5 * err * x
                    losses.append(err * err)
                    step += 1
                    if self.stop.wait(0.004):  # the "device" part of the step
                        return
                    now = time.perf_counter()
                    self.tm.observe_step(now - last, min(waited, now - last))
                    self.tm.set_global_step(step)
                    last = now
                self.tm.set_loss("train", float(np.mean(losses)))
                self._validate(epoch)
                epoch += 1
        except BaseException as e:  # reported by the test, not lost with the thread
            self.error = e

    def _validate(self, epoch: int) -> None:
        pred, true, losses = [], [], []
        for i in range(N_VAL):
            x, y = self._xy(self.val.get(i, epoch))
            p = float(x @ self.w)
            losses.append((p - y) ** 2)
            pred.append(p > 0.5)
            true.append(y > 0.5)
        tp = sum(p and t for p, t in zip(pred, true, strict=True))
        precision = tp / max(1, sum(pred))
        recall = tp / max(1, sum(true))
        hmean = 2 * precision * recall / (precision + recall) if tp else 0.0
        self.tm.set_loss("val", float(np.mean(losses)))
        self.tm.set_val_metrics(hmean, precision, recall)


def test_every_panel_and_alert_returns_data_from_a_real_run(
    tmp_path: Path, prometheus_server
) -> None:  # type: ignore[no-untyped-def]
    paths = _write_images(tmp_path / "images")
    probe = FakeProbe(_probe_reading(usage_gib=4))
    config = CacheConfig(max_bytes="64KiB", reserve_bytes=0, probe_interval_s=0)
    train_pipe = _pipeline(paths[:N_TRAIN], random=True)
    val_pipe = _pipeline(paths[N_TRAIN:], random=False)
    train = AdaptiveCache(train_pipe, config, name="train", probe=probe)
    val = AdaptiveCache(val_pipe, config, name="val", probe=probe)
    exporter = Exporter(MonitoringConfig(port=0))
    exporter.add_cache(train)
    exporter.add_cache(val)
    host, port = exporter.start()
    run = _Run(train, val, exporter.training)
    try:
        server = prometheus_server(f"{host}:{port}")
        run.thread.start()
        api = server.api
        server.wait_for('up{job="adaptive-cache"} == 1', timeout=30)

        # Warm-up: the train cache serves hits, seen through Prometheus.
        hit_ratio = dict(panel_queries(main_only=True))["Hit ratio per tier"]
        wait_until(
            lambda: any(float(r["value"][1]) > 0 for r in api.query(hit_ratio)),
            timeout=30,
            what="a hit ratio above 0",
            detail=lambda: f"{train.stats().summary()}\n{server.log_tail()}",
        )

        # Memory pressure: 11.5 of 12 GiB used in the container. The exporter reads the
        # probe at each scrape, so Prometheus's memory rules go pending.
        probe.set(container_usage_bytes=int(11.5 * GiB))
        server.wait_for('ALERTS{alertname="AdaptiveCacheMemoryHeadroomLow"}', timeout=30)
        server.wait_for('ALERTS{alertname="AdaptiveCacheContainerMemoryNearLimit"}', timeout=30)
        assert run.error is None, run.error

        served = names(parse(scrape(host, port))) | {"up", "ALERTS"}
        empty = []
        for title, expr in panel_queries():
            assert metric_names(expr) <= served, f"{title}: {metric_names(expr) - served}"
            result = api.query(expr)
            if not result:
                empty.append(f"panel {title!r}: {expr}")
            elif title == "Hit ratio per tier":
                values = [float(r["value"][1]) for r in result]
                assert all(0 <= v <= 1 for v in values if not math.isnan(v)), values
        for name, selector in variable_selectors():
            assert metric_names(selector) <= served
            assert api.series(selector), f"variable {name}: no series for {selector}"
        for rule in alert_rules():
            assert metric_names(rule.expr) <= served, f"{rule.name}: {metric_names(rule.expr)}"
            if not api.query(presence_expr(rule.expr)):
                empty.append(f"alert {rule.name} ({rule.severity}): {presence_expr(rule.expr)}")
        assert not empty, "queries without data:\n" + "\n".join(empty)

        # What Prometheus holds agrees with the cache's own counts.
        scraped = sum(
            float(r["value"][1]) for r in api.query('adaptive_cache_requests_total{split="train"}')
        )
        assert 0 < scraped <= train.stats().requests

        # The README picture's code path: every panel's main query, plotted.
        end = time.time()
        png = plot_dashboard(server.url, end - 60, end, tmp_path / "dashboard.png", step=1)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 50_000
    finally:
        run.stop.set()
        if run.thread.is_alive():
            run.thread.join(timeout=30)
        exporter.stop()
        train.close()
        val.close()
    assert run.error is None, run.error
