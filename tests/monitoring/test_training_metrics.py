"""TrainingMetrics: instruments updated by the trainer's callback."""

from __future__ import annotations

import math

import pytest
from prometheus_client.registry import CollectorRegistry

from monitoring.training_metrics import TrainingMetrics
from tests.monitoring.helpers import collect, value


@pytest.fixture
def tm_registry() -> tuple[TrainingMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return TrainingMetrics(registry), registry


def test_steps_fill_both_histograms(tm_registry: tuple[TrainingMetrics, CollectorRegistry]) -> None:
    tm, registry = tm_registry
    tm.observe_step(0.5, 0.125)
    tm.observe_step(2.0, 1.5)
    s = collect(registry)
    assert value(s, "adaptive_cache_training_step_seconds_count") == 2
    assert value(s, "adaptive_cache_training_step_seconds_sum") == 2.5
    assert value(s, "adaptive_cache_training_step_seconds_bucket", le="0.5") == 1
    assert value(s, "adaptive_cache_training_step_seconds_bucket", le="2.5") == 2
    assert value(s, "adaptive_cache_training_data_wait_seconds_sum") == 1.625
    assert value(s, "adaptive_cache_training_data_wait_seconds_bucket", le="0.25") == 1


def test_progress_loss_and_scores(tm_registry: tuple[TrainingMetrics, CollectorRegistry]) -> None:
    tm, registry = tm_registry
    tm.set_epoch(3)
    tm.set_global_step(1200)
    tm.set_loss("train", 0.75)
    tm.set_loss("val", 0.875)
    tm.set_val_metrics(hmean=0.625, precision=0.75, recall=0.5)
    s = collect(registry)
    assert value(s, "adaptive_cache_training_epoch") == 3
    assert value(s, "adaptive_cache_training_global_step") == 1200
    assert value(s, "adaptive_cache_training_loss", split="train") == 0.75
    assert value(s, "adaptive_cache_training_loss", split="val") == 0.875
    assert value(s, "adaptive_cache_training_val_hmean_ratio") == 0.625
    assert value(s, "adaptive_cache_training_val_precision_ratio") == 0.75
    assert value(s, "adaptive_cache_training_val_recall_ratio") == 0.5


@pytest.mark.parametrize(
    ("step", "wait", "match"),
    [
        (-1.0, 0.0, "step_seconds must be a non-negative"),
        (1.0, math.nan, "data_wait_seconds must be a non-negative"),
        (0.5, 0.75, "cannot exceed"),
    ],
)
def test_bad_step_times_are_rejected(
    tm_registry: tuple[TrainingMetrics, CollectorRegistry], step: float, wait: float, match: str
) -> None:
    tm, registry = tm_registry
    with pytest.raises(ValueError, match=match):
        tm.observe_step(step, wait)
    assert value(collect(registry), "adaptive_cache_training_step_seconds_count") == 0


def test_bad_split_and_types_are_rejected(
    tm_registry: tuple[TrainingMetrics, CollectorRegistry],
) -> None:
    tm, _ = tm_registry
    with pytest.raises(ValueError, match="split must be one of"):
        tm.set_loss("sample_17", 1.0)
    with pytest.raises(TypeError, match="epoch must be a number"):
        tm.set_epoch("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train loss"):
        tm.set_loss("train", math.nan)


def test_a_bad_score_leaves_all_scores_unchanged(
    tm_registry: tuple[TrainingMetrics, CollectorRegistry],
) -> None:
    tm, registry = tm_registry
    tm.set_val_metrics(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="recall is a ratio"):
        tm.set_val_metrics(0.75, 0.75, 1.5)
    s = collect(registry)
    assert value(s, "adaptive_cache_training_val_hmean_ratio") == 0.5
    assert value(s, "adaptive_cache_training_val_precision_ratio") == 0.5


def test_one_set_of_instruments_per_registry() -> None:
    registry = CollectorRegistry()
    TrainingMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        TrainingMetrics(registry)
