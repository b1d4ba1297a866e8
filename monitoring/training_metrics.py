"""TrainingMetrics: the trainer's progress as Prometheus instruments.

Unlike cache and memory values, these exist only as events (a step ended, a
validation finished), so they are ordinary instruments that the trainer's callback
updates. Each update is one lock and an add (about a microsecond), once per step.
"""

from __future__ import annotations

import math

from prometheus_client import Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from monitoring import metrics as m

# Steps range from tens of milliseconds (GPU, small model) to tens of seconds (CPU).
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A loader that keeps up answers in well under a millisecond; a starved one in seconds.
DATA_WAIT_BUCKETS = (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _check(name: str, value: float, *, allow_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (not allow_negative and value < 0):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return value


class TrainingMetrics:
    """Epoch, step, step timing, losses and validation scores of one training run.

    Args:
        registry: registry the instruments are registered with (one set per registry).

    Example:
        >>> tm = TrainingMetrics(CollectorRegistry())
        >>> tm.observe_step(step_seconds=0.41, data_wait_seconds=0.02)
        >>> tm.set_loss("train", 0.87)
    """

    SPLITS = m.LABELS["split"]

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(spec: m.MetricSpec) -> Gauge:
            return Gauge(spec.name, spec.help, spec.labels, registry=registry)

        def histogram(spec: m.MetricSpec, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=buckets)

        self._epoch = gauge(m.EPOCH)
        self._step = gauge(m.GLOBAL_STEP)
        self._step_seconds = histogram(m.STEP_SECONDS, STEP_BUCKETS)
        self._data_wait = histogram(m.DATA_WAIT_SECONDS, DATA_WAIT_BUCKETS)
        self._loss = gauge(m.LOSS)
        self._hmean = gauge(m.VAL_HMEAN)
        self._precision = gauge(m.VAL_PRECISION)
        self._recall = gauge(m.VAL_RECALL)

    def observe_step(self, step_seconds: float, data_wait_seconds: float) -> None:
        """Record one training step.

        Args:
            step_seconds: wall time of the step, from the end of the previous step,
                waiting for data included.
            data_wait_seconds: the part of it spent waiting for the batch.

        Raises:
            ValueError: a negative or NaN time, or a wait longer than the step.
        """
        step = _check("step_seconds", step_seconds)
        wait = _check("data_wait_seconds", data_wait_seconds)
        if wait > step:
            raise ValueError(
                f"data_wait_seconds ({wait}) is part of step_seconds ({step}) and cannot exceed it"
            )
        self._step_seconds.observe(step)
        self._data_wait.observe(wait)

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch (0-based, as Lightning counts)."""
        self._epoch.set(_check("epoch", epoch))

    def set_global_step(self, step: int) -> None:
        """Set the number of optimizer steps taken."""
        self._step.set(_check("global step", step))

    def set_loss(self, split: str, value: float) -> None:
        """Set the latest loss of ``split`` (``train``, ``val`` or ``test``).

        Raises:
            ValueError: an unknown split or a NaN loss.
        """
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        self._loss.labels(split).set(_check(f"{split} loss", value, allow_negative=True))

    def set_val_metrics(self, hmean: float, precision: float, recall: float) -> None:
        """Set the latest validation scores, each a ratio in [0, 1].

        Raises:
            ValueError: a score outside [0, 1].
        """
        scores = {"hmean": hmean, "precision": precision, "recall": recall}
        checked = {name: _check(name, value) for name, value in scores.items()}
        for name, v in checked.items():
            if v > 1.0:
                raise ValueError(f"{name} is a ratio in [0, 1], got {v!r}")
        # Validated first so that a bad score leaves all three unchanged.
        self._hmean.set(checked["hmean"])
        self._precision.set(checked["precision"])
        self._recall.set(checked["recall"])
