"""BudgetController with a fake probe and a fake clock."""

from __future__ import annotations

import pytest

from adaptive_cache.budget import BudgetController
from adaptive_cache.clock import FakeClock
from adaptive_cache.config import CacheConfig
from adaptive_cache.memory import FakeProbe

GiB = 1024**3
TOTAL = 16 * GiB  # watermarks: low 1.6 GiB, high 3.2 GiB; critical below 0.8 GiB


def _controller(available: float, **config):
    config.setdefault("reserve_bytes", 1 * GiB)
    probe = FakeProbe(total_bytes=TOTAL, available_bytes=int(available * GiB))
    clock = FakeClock()
    ctl = BudgetController(CacheConfig(**config), probe, clock=clock)
    return ctl, probe, clock


def _set_available(probe: FakeProbe, gib: float) -> None:
    probe.set(host_available_bytes=int(gib * GiB))


def test_automatic_budget_is_share_of_headroom_plus_cache_minus_reserve():
    ctl, probe, _ = _controller(12)
    d = ctl.update(0)
    assert d.budget_bytes == int(0.5 * 12 * GiB) - 1 * GiB
    assert d.headroom_bytes == 12 * GiB
    assert (d.free_target_bytes, d.alert) == (0, None)
    # The cache's own bytes (shm) are used memory: adding them back keeps the budget
    # stable while it fills.
    _set_available(probe, 10)
    assert ctl.update(2 * GiB, force=True).budget_bytes == int(0.5 * 12 * GiB) - 1 * GiB


def test_disk_and_redis_bytes_are_not_counted_as_memory(tmp_path):
    ctl, _, _ = _controller(12, store="disk", disk_dir=str(tmp_path))
    assert not ctl.counts_memory
    assert ctl.update(2 * GiB).budget_bytes == int(0.5 * 12 * GiB) - 1 * GiB


def test_reserve_larger_than_share_gives_zero():
    ctl, _, _ = _controller(4, reserve_bytes=3 * GiB)
    assert ctl.update(0).budget_bytes == 0


def test_max_bytes_replaces_automatic_sizing_but_not_pressure():
    ctl, probe, _ = _controller(12, max_bytes="9GiB")
    assert ctl.update(0).budget_bytes == 9 * GiB  # more than the automatic 5 GiB
    _set_available(probe, 1.0)  # below low (1.6 GiB)
    d = ctl.update(6 * GiB, force=True)
    assert d.free_target_bytes > 0
    assert d.budget_bytes == 6 * GiB - d.free_target_bytes


def test_pressure_frees_enough_to_climb_past_low_and_alerts():
    ctl, _, _ = _controller(1.0)
    d = ctl.update(4 * GiB)
    # back above low (1.6 GiB) plus half the band between the watermarks (0.8 GiB)
    assert d.free_target_bytes == pytest.approx(1.4 * GiB, abs=2)
    assert 1.0 * GiB + d.free_target_bytes > 0.1 * TOTAL
    # never more than what remains after the eviction (here the automatic 1.5 GiB is less)
    assert d.budget_bytes == min(4 * GiB - d.free_target_bytes, int(0.5 * 5 * GiB) - 1 * GiB)
    assert d.alert is not None and d.alert.level == "warning"
    assert d.alert.available_bytes == 1 * GiB and d.alert.limit_bytes == TOTAL
    assert "1.00 GiB available" in d.alert.message


def test_free_target_never_exceeds_what_the_cache_holds():
    ctl, _, _ = _controller(0.5)
    d = ctl.update(100)
    assert d.free_target_bytes == 100 and d.budget_bytes == 0
    assert d.alert is not None and d.alert.level == "critical"  # below low/2 = 0.8 GiB


def test_between_probes_eviction_counts_against_the_target():
    ctl, probe, _ = _controller(1.0)
    first = ctl.update(4 * GiB)
    d = ctl.update(3 * GiB)  # evicted 1 GiB; same probe reading
    assert probe.reads == 1
    assert d.free_target_bytes == first.free_target_bytes - 1 * GiB
    assert d.headroom_bytes == 2 * GiB
    d = ctl.update(4 * GiB - first.free_target_bytes)
    assert d.free_target_bytes == 0
    assert d.alert is None


def test_hysteresis_budget_grows_only_above_high():
    ctl, probe, clock = _controller(12, max_bytes="8GiB", probe_interval_s=1.0)
    assert ctl.update(3 * GiB).budget_bytes == 8 * GiB
    for available, cache, budget in [
        (1.0, 3 * GiB, None),  # pressure: below low
        (2.5, 2 * GiB, 2 * GiB),  # between low and high: held, no growth
        (3.0, 2 * GiB, 2 * GiB),
        (3.3, 2 * GiB, 8 * GiB),  # above high: grows again
    ]:
        clock.advance(1.0)
        _set_available(probe, available)
        d = ctl.update(cache)
        if budget is not None:
            assert d.budget_bytes == budget, (available, d)
            assert d.free_target_bytes == 0


def test_alert_once_per_episode_escalating_to_critical_once():
    ctl, probe, clock = _controller(1.2, probe_interval_s=0.0)
    alerts = []
    for available in (1.2, 1.1, 1.3, 2.0, 1.0, 0.6, 0.5, 1.0, 2.5, 3.5, 1.0, 1.1):
        _set_available(probe, available)
        clock.advance(0.1)
        alerts.append(ctl.update(4 * GiB).alert)
    levels = [a.level if a else None for a in alerts]
    assert levels == [
        "warning",  # episode 1 starts
        None,
        None,
        None,  # between the watermarks: still the same episode
        None,
        "critical",  # escalation within the episode
        None,
        None,
        None,
        None,  # above high (3.2 GiB): episode over
        "warning",  # episode 2
        None,
    ]
    assert ctl.in_pressure_episode


def test_probes_are_rate_limited():
    ctl, probe, clock = _controller(12, probe_interval_s=0.25)
    for _ in range(5):
        ctl.update(0)
    assert probe.reads == 1
    clock.advance(0.2)
    ctl.update(0)
    assert probe.reads == 1
    clock.advance(0.05)
    ctl.update(0)
    assert probe.reads == 2
    ctl.update(0, force=True)
    assert probe.reads == 3
    assert ctl.last is not None and ctl.last.headroom_bytes == 12 * GiB


def test_cache_growth_between_probes_can_trigger_pressure_without_alert():
    ctl, probe, _ = _controller(3.5, probe_interval_s=10.0, max_bytes="8GiB")
    ctl.update(0)
    d = ctl.update(2 * GiB)  # estimated available: 1.5 GiB < low
    assert probe.reads == 1
    assert d.free_target_bytes > 0
    assert d.alert is None  # alerts come from real readings only


def test_negative_cache_bytes_is_rejected():
    ctl, _, _ = _controller(12)
    with pytest.raises(ValueError, match="cache_bytes"):
        ctl.update(-1)
