"""MonitoringConfig: where the Prometheus exporter listens."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MonitoringConfig(BaseModel):
    """Settings of the ``/metrics`` exporter and the in-process memory alerts.

    The exporter binds to ``127.0.0.1`` unless ``host`` says otherwise; ``port: 0``
    picks a free port (printed at start).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    job: str = "adaptive-cache"
