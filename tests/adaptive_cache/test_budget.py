"""BudgetController with a fake probe and a fake clock."""

from __future__ import annotations

import pytest

from adaptive_cache.budget import BudgetController
from adaptive_cache.clock import FakeClock
from adaptive_cache.config import CacheConfig
from adaptive_cache.memory import FakeProbe
from adaptive_cache.node import DIRNAME, NodeRegistry

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
    ctl, _, _ = _controller(4, reserve_bytes=3 * GiB, reserve_fraction=None)
    assert ctl.update(0).budget_bytes == 0


def test_max_bytes_replaces_automatic_sizing_but_not_pressure():
    ctl, probe, _ = _controller(12, max_bytes="6GiB")
    assert ctl.update(0).budget_bytes == 6 * GiB  # more than the automatic 5 GiB
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
    ctl, probe, clock = _controller(12, max_bytes="7GiB", probe_interval_s=1.0)
    assert ctl.update(3 * GiB).budget_bytes == 7 * GiB
    for available, cache, budget in [
        (1.0, 3 * GiB, None),  # pressure: below low
        (2.5, 2 * GiB, 2 * GiB),  # between low and high: held, no growth
        (3.0, 2 * GiB, 2 * GiB),
        (3.3, 2 * GiB, 7 * GiB),  # above high: grows again
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
    ctl, probe, _ = _controller(3.5, probe_interval_s=10.0, max_bytes="7GiB")
    ctl.update(0)
    d = ctl.update(2 * GiB)  # estimated available: 1.5 GiB < low
    assert probe.reads == 1
    assert d.free_target_bytes > 0
    assert d.alert is None  # alerts come from real readings only


def test_negative_cache_bytes_is_rejected():
    ctl, _, _ = _controller(12)
    with pytest.raises(ValueError, match="cache_bytes"):
        ctl.update(-1)


MiB = 1024**2


def _container(limit: int, usage: int, **config):
    """A controller reading a container of ``limit`` bytes, ``usage`` of them used."""
    probe = FakeProbe(total_bytes=TOTAL)
    probe.set(container_limit_bytes=limit, container_usage_bytes=usage)
    return BudgetController(CacheConfig(**config), probe, clock=FakeClock())


def test_reserve_scales_with_the_limit():
    # 2 GiB container, 512 MiB used: a fixed 1 GiB reserve eats the whole share.
    fixed = _container(2 * GiB, 512 * MiB, reserve_fraction=None)
    assert fixed.update(0).budget_bytes == 0
    scaled = _container(2 * GiB, 512 * MiB)
    reserve = int(0.1 * 2 * GiB)
    assert scaled.update(0).budget_bytes == int(0.5 * 1536 * MiB) - reserve  # 563 MiB
    # From 10 GiB up the reserve is reserve_bytes, as before.
    assert CacheConfig().reserve_for(10 * GiB) == CacheConfig().reserve_for(1024 * GiB) == GiB
    assert CacheConfig(reserve_bytes="256MiB").reserve_for(16 * GiB) == 256 * MiB
    assert CacheConfig(reserve_fraction=None).reserve_for(1 * GiB) == GiB


def test_max_bytes_above_the_limit_is_clamped_with_one_warning(caplog, tmp_path):
    ctl = _container(600 * MiB, 400 * MiB, max_bytes="2GiB", probe_interval_s=0.0)
    ceiling = int(0.5 * 600 * MiB) - int(0.1 * 600 * MiB)  # 240 MiB
    # A second cache with the same setting (the val split's) does not repeat it.
    ctl2 = _container(600 * MiB, 400 * MiB, max_bytes="2GiB", probe_interval_s=0.0)
    with caplog.at_level("WARNING", logger="adaptive_cache.budget"):
        budgets = [c.update(0).budget_bytes for _ in range(3) for c in (ctl, ctl2)]
    assert budgets == [ceiling] * 6
    (record,) = [r for r in caplog.records if "cache.max_bytes" in r.getMessage()]
    msg = record.getMessage()
    assert "cache.max_bytes=2.00 GiB" in msg and "limit 600.00 MiB" in msg and "240.00 MiB" in msg
    # Within the ceiling, or not in memory: as configured.
    assert _container(600 * MiB, 0, max_bytes="200MiB").update(0).budget_bytes == 200 * MiB
    disk = _container(600 * MiB, 0, max_bytes="2GiB", store="disk", disk_dir=str(tmp_path))
    assert disk.update(0).budget_bytes == 2 * GiB


def _node_controllers(tmp_path, groups, available=12.0, **config):
    """One controller per group name (repeat a name for the ranks of one cache)."""
    registry = NodeRegistry(tmp_path / DIRNAME)
    probe = FakeProbe(total_bytes=TOTAL, available_bytes=int(available * GiB))
    config.setdefault("reserve_bytes", 1 * GiB)
    config.setdefault("probe_interval_s", 0.0)
    out = []
    for group in groups:
        cfg = CacheConfig(**config)
        slot = registry.join(group, fixed=cfg.max_bytes is not None)
        out.append(BudgetController(cfg, probe, clock=FakeClock(), node=slot))
    return out, probe


def test_node_budget_is_shared_by_every_cache_of_the_node(tmp_path):
    (a, b), probe = _node_controllers(tmp_path, ["train-a", "train-b"])
    node = int(0.5 * 12 * GiB) - GiB  # what one cache alone would get
    assert a.update(0).budget_bytes == node  # b has not registered yet
    b.update(0)
    da, db = a.update(0), b.update(0)
    assert da.node_budget_bytes == db.node_budget_bytes == node
    assert da.budget_bytes == db.budget_bytes == node // 2
    # Bytes a cache holds are counted back into the node's headroom, as for one cache.
    _set_available(probe, 10)
    da = a.update(2 * GiB)
    assert da.node_budget_bytes == node
    # A cache whose demand is small gets it; the other takes the rest.
    b.set_demand(100 * MiB)
    db = b.update(0)
    assert db.budget_bytes == int(100 * MiB * 1.1)
    assert a.update(2 * GiB).budget_bytes == node - db.budget_bytes
    # When one leaves, the other has the node to itself at its next probe.
    b.close()
    assert a.update(2 * GiB).budget_bytes == node


def test_node_budget_leaves_out_what_fixed_caches_hold(tmp_path):
    (auto,), _ = _node_controllers(tmp_path, ["auto"])
    (fixed,), _ = _node_controllers(tmp_path, ["fixed"], max_bytes="3GiB")
    assert fixed.node.fixed
    assert fixed.update(2 * GiB).budget_bytes == 3 * GiB
    d = auto.update(0)
    # headroom counts the fixed cache's 2 GiB back in, then they are taken out
    assert d.budget_bytes == d.node_budget_bytes == int(0.5 * 14 * GiB) - GiB - 2 * GiB


def test_ddp_ranks_of_one_cache_are_one_group_and_not_divided_twice(tmp_path):
    # Two ranks of one cache each report their bytes times the local world size (the
    # engine divides the budget it gets by the same number): the group's budget must be
    # what one cache alone would get, with or without the registry.
    (r0, r1), _ = _node_controllers(tmp_path, ["val-run", "val-run"])
    alone, _, _ = _controller(12)
    r0.update(2 * GiB)
    d1 = r1.update(2 * GiB)  # each rank holds 1 GiB
    d0 = r0.update(2 * GiB)
    expect = alone.update(2 * GiB).budget_bytes
    assert d0.budget_bytes == d1.budget_bytes == expect
    # A second cache on the node halves the group's budget, not a quarter.
    (other,), _ = _node_controllers(tmp_path, ["train-run"])
    other.update(0)
    assert r0.update(2 * GiB).budget_bytes == d0.node_budget_bytes // 2
