"""Shared helpers of the monitoring tests: parse an exposition, a stats source."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from adaptive_cache.stats import CacheStats

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition: ``(name, labels) -> value``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def collect(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample; KeyError listing the sample names if absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        names = sorted({n for n, _ in samples})
        raise KeyError(f"no sample {name}{labels}; names present: {names}")
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@dataclass
class _Store:
    name: str


@dataclass
class StatsHolder:
    """A stats source holding a :class:`CacheStats` set by the test (the collector's
    contract: ``name``, ``store.name``, ``stats()``); counts its reads."""

    name: str
    current: CacheStats = field(default_factory=CacheStats)
    store: _Store = field(default_factory=lambda: _Store("shm"))
    reads: int = 0

    def stats(self) -> CacheStats:
        self.reads += 1
        return self.current


def example_stats(scale: int = 1) -> CacheStats:
    """Stats with distinct numbers in every field and three tiers."""
    s = CacheStats(
        requests=1000 * scale,
        hits=750 * scale,
        budget_bytes=2**30,
        headroom_bytes=5 * 2**30,
        store_errors=3 * scale,
        processes=2,
    )
    for i, tier in enumerate(("image", "maps", "tensor")):
        t = s.tier(tier)
        t.hits = (100 + i) * scale
        t.misses = (200 + i) * scale
        t.insertions = (300 + i) * scale
        t.evictions.update(budget=1 + i, pressure=2 + i, replaced=3 + i, invalid=4 + i)
        t.bytes = (i + 1) * 2**20
        t.items = 10 + i
        t.saved_seconds = 0.5 * (i + 1) * scale
    for seconds in (20e-6, 40e-6, 40e-6, 3e-3, 0.5):
        s.observe_lookup(seconds)
    return s
