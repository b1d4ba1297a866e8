"""Every metric the exporter serves, declared once: name, type, help and labels.

Collectors and instruments build their families from these specs, so a name is
spelled in exactly one place and the tests can check every one of them against
Prometheus conventions: namespace ``adaptive_cache``, base units in the name
(``_bytes``, ``_seconds``, ``_ratio``), ``_total`` on counters, and labels drawn
from the small fixed sets in :data:`LABELS` (never a sample id).

Hit ratios are not exported: PromQL computes them from the request counters, e.g.
``rate(adaptive_cache_tier_requests_total{result="hit"}[5m])
/ rate(adaptive_cache_tier_requests_total[5m])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from adaptive_cache.stats import ALERT_LEVELS, EVICTION_REASONS

NAMESPACE = "adaptive_cache"

# Label name -> the values it may take (None: a small set known only at run time,
# such as tier names from the pipeline, store kinds or GPU indices).
LABELS: dict[str, tuple[str, ...] | None] = {
    "split": ("train", "val", "test"),
    "tier": None,
    "store": ("shm", "local", "disk", "redis"),
    "result": ("hit", "miss"),
    "reason": EVICTION_REASONS,
    "level": ALERT_LEVELS,
    "gpu": None,
}

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as it appears on ``/metrics``.

    Attributes:
        name: the exposed family name; counters include their ``_total`` suffix.
        kind: ``counter``, ``gauge`` or ``histogram``.
        help: the HELP text.
        labels: label names, each a key of :data:`LABELS`.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The name prometheus_client expects (counters without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def series(self) -> tuple[str, ...]:
        """Every sample name this family puts on ``/metrics``."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)

    def new_family(self) -> Metric:
        """An empty family to fill with ``add_metric`` in a collector's ``collect()``."""
        cls = _FAMILIES[self.kind]
        return cls(self.family, self.help, labels=self.labels)


_FAMILIES: dict[str, type[Metric]] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
}


_CACHE = ("split", "store")
_TIER = ("split", "store", "tier")

# Cache (read from CacheStats at scrape time by CacheCollector).
REQUESTS = MetricSpec(
    "adaptive_cache_requests_total",
    "counter",
    "Samples requested from the cache; result=hit when any tier served the sample.",
    (*_CACHE, "result"),
)
TIER_REQUESTS = MetricSpec(
    "adaptive_cache_tier_requests_total",
    "counter",
    "Lookups of one tier; result=hit when the tier served the sample, miss when it held nothing.",
    (*_TIER, "result"),
)
INSERTIONS = MetricSpec(
    "adaptive_cache_insertions_total", "counter", "Entries admitted into a tier.", _TIER
)
EVICTIONS = MetricSpec(
    "adaptive_cache_evictions_total",
    "counter",
    "Entries removed from a tier, by reason (budget, pressure, replaced, invalid).",
    (*_TIER, "reason"),
)
HELD_BYTES = MetricSpec(
    "adaptive_cache_held_bytes", "gauge", "Bytes held by a tier (summed over the node).", _TIER
)
HELD_ENTRIES = MetricSpec(
    "adaptive_cache_held_entries", "gauge", "Entries held by a tier (summed over the node).", _TIER
)
BUDGET_BYTES = MetricSpec(
    "adaptive_cache_budget_bytes", "gauge", "Byte budget the cache keeps within.", _CACHE
)
HEADROOM_BYTES = MetricSpec(
    "adaptive_cache_headroom_bytes",
    "gauge",
    "Memory headroom the cache's budget controller last measured.",
    _CACHE,
)
SAVED_SECONDS = MetricSpec(
    "adaptive_cache_rebuild_saved_seconds_total",
    "counter",
    "Seconds of rebuild work (decode, transforms) that hits of a tier avoided.",
    _TIER,
)
LOOKUP_SECONDS = MetricSpec(
    "adaptive_cache_lookup_seconds", "histogram", "Time one cache lookup took.", _CACHE
)
STORE_ERRORS = MetricSpec(
    "adaptive_cache_store_errors_total",
    "counter",
    "Store operations that failed (the sample was rebuilt instead).",
    _CACHE,
)
PROCESSES = MetricSpec(
    "adaptive_cache_processes",
    "gauge",
    "Processes (DDP ranks) whose statistics are summed into this cache's metrics.",
    _CACHE,
)

# In-process memory alerts (counted by monitoring.alerts.AlertListener).
MEMORY_ALERTS = MetricSpec(
    "adaptive_cache_memory_alerts_total",
    "counter",
    "Memory alerts the cache raised, by level.",
    ("level",),
)

# Memory (read from the memory probe at scrape time by MemoryCollector).
MEMORY_AVAILABLE = MetricSpec(
    "adaptive_cache_memory_available_bytes",
    "gauge",
    "Memory this process may still use: host available, capped by the container's limit.",
)
MEMORY_LIMIT = MetricSpec(
    "adaptive_cache_memory_limit_bytes",
    "gauge",
    "Memory this process may use in all: the container limit if any, else host total.",
)
HOST_AVAILABLE = MetricSpec(
    "adaptive_cache_host_memory_available_bytes", "gauge", "Host memory available (psutil)."
)
HOST_TOTAL = MetricSpec(
    "adaptive_cache_host_memory_total_bytes", "gauge", "Host physical memory (psutil)."
)
CONTAINER_LIMIT = MetricSpec(
    "adaptive_cache_container_memory_limit_bytes",
    "gauge",
    "Container (cgroup) memory limit; absent when the process runs without one.",
)
CONTAINER_HIGH = MetricSpec(
    "adaptive_cache_container_memory_high_bytes",
    "gauge",
    "Container (cgroup v2 memory.high) throttling threshold; absent when unset.",
)
CONTAINER_USAGE = MetricSpec(
    "adaptive_cache_container_memory_usage_bytes",
    "gauge",
    "Container (cgroup) memory usage, page cache included; absent without a limit.",
)
GPU_TOTAL = MetricSpec(
    "adaptive_cache_gpu_memory_total_bytes", "gauge", "GPU memory in all.", ("gpu",)
)
GPU_USED = MetricSpec("adaptive_cache_gpu_memory_used_bytes", "gauge", "GPU memory used.", ("gpu",))
GPU_FREE = MetricSpec("adaptive_cache_gpu_memory_free_bytes", "gauge", "GPU memory free.", ("gpu",))

# Training (instruments updated by the trainer's callback through TrainingMetrics).
EPOCH = MetricSpec("adaptive_cache_training_epoch", "gauge", "Current training epoch.")
GLOBAL_STEP = MetricSpec(
    "adaptive_cache_training_global_step", "gauge", "Optimizer steps taken so far."
)
STEP_SECONDS = MetricSpec(
    "adaptive_cache_training_step_seconds",
    "histogram",
    "Wall time of one training step, from the end of the previous one (data wait included).",
)
DATA_WAIT_SECONDS = MetricSpec(
    "adaptive_cache_training_data_wait_seconds",
    "histogram",
    "Time one training step waited for its batch from the data loader.",
)
LOSS = MetricSpec("adaptive_cache_training_loss", "gauge", "Latest loss of a split.", ("split",))
VAL_HMEAN = MetricSpec(
    "adaptive_cache_training_val_hmean_ratio", "gauge", "Validation hmean (ICDAR 2015)."
)
VAL_PRECISION = MetricSpec(
    "adaptive_cache_training_val_precision_ratio", "gauge", "Validation precision."
)
VAL_RECALL = MetricSpec("adaptive_cache_training_val_recall_ratio", "gauge", "Validation recall.")

ALL: tuple[MetricSpec, ...] = (
    REQUESTS,
    TIER_REQUESTS,
    INSERTIONS,
    EVICTIONS,
    HELD_BYTES,
    HELD_ENTRIES,
    BUDGET_BYTES,
    HEADROOM_BYTES,
    SAVED_SECONDS,
    LOOKUP_SECONDS,
    STORE_ERRORS,
    PROCESSES,
    MEMORY_ALERTS,
    MEMORY_AVAILABLE,
    MEMORY_LIMIT,
    HOST_AVAILABLE,
    HOST_TOTAL,
    CONTAINER_LIMIT,
    CONTAINER_HIGH,
    CONTAINER_USAGE,
    GPU_TOTAL,
    GPU_USED,
    GPU_FREE,
    EPOCH,
    GLOBAL_STEP,
    STEP_SECONDS,
    DATA_WAIT_SECONDS,
    LOSS,
    VAL_HMEAN,
    VAL_PRECISION,
    VAL_RECALL,
)
"""Every family, in the order they appear on ``/metrics``."""
