"""A minimal client for Prometheus's HTTP API (queries, series, readiness).

Standard library only; used by :mod:`monitoring.plot` and the end-to-end tests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (``error_type`` as in its API: bad_data, ...)."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusAPI:
    """Queries one Prometheus server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:9090``.
        timeout: seconds to wait for each HTTP answer.

    Example:
        >>> api = PrometheusAPI("http://127.0.0.1:9090")
        >>> api.query("up")[0]["value"]
        [1718000000.0, '1']
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def ready(self) -> bool:
        """Whether ``/-/ready`` answers 200 (false while starting or unreachable)."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (vector samples: ``metric`` and ``value``)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = repr(float(time))
        return self._get("query", params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query; the ``result`` list (matrix: ``metric`` and ``values``)."""
        params = {"query": expr, "start": repr(start), "end": repr(end), "step": repr(step)}
        return self._get("query_range", params)["result"]

    def series(self, match: str) -> list[dict[str, str]]:
        """Label sets of the series a selector matches."""
        return self._get("series", {"match[]": match})

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (with ``health`` and ``lastError``)."""
        return self._get("targets", {})["activeTargets"]

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as e:
            # Prometheus puts the reason in the JSON body of 4xx/5xx answers.
            try:
                doc = json.load(e)
            except ValueError:
                raise PrometheusError(f"{url}: HTTP {e.code}") from e
        if doc.get("status") != "success":
            raise PrometheusError(
                f"Prometheus {path} failed: {doc.get('errorType')}: {doc.get('error')} "
                f"(params {params})",
                doc.get("errorType", ""),
            )
        return doc["data"]
