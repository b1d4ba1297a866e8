"""CostModel: a sample's rebuild time is its fastest measurement."""

from __future__ import annotations

from adaptive_cache.engine.costs import CostModel
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import FunctionStage, Pipeline
from adaptive_cache.work import WorkReport
from tests.adaptive_cache.engine.test_auto_vs_static import Blocks


def test_delays_only_add_time_so_the_fastest_measurement_is_kept():
    pipe = Pipeline(Blocks([10], [0.0]), [FunctionStage("s", lambda s: s)], {"t": "s"})
    costs = CostModel(pipe)
    key = EntryKey("t", "aa")
    assert costs.candidate(key) is None
    assert costs.measure(key, 100, 0.030).seconds == 0.030
    assert costs.measure(key, 100, 0.010).seconds == 0.010
    assert costs.measure(key, 100, 0.050).seconds == 0.010
    # Computed again but not written (a miss kept out): re-timed, size unchanged.
    report = WorkReport(0, keys=(key,), timings=[0.002, 0.003])
    costs.remeasure(report, 0.0, written=(), held=())
    assert costs.candidate(key).seconds == 0.005 and costs.candidate(key).nbytes == 100
    assert costs.tiers["t"].samples == 3 and costs.assumed_seconds("t") > 0
