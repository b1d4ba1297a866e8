"""Exporter: serves ``/metrics`` for the caches, memory and training of one process.

Start it in the process that consumes batches, and under DDP only on rank 0: the
engine's ``stats()`` already sums every DataLoader worker and every rank of the
node, so one exporter per node serves the whole picture (the caller, the trainer's
callback, decides; the exporter does not look at ranks). DataLoader workers never
export, which is why prometheus multiprocess mode, and its file per dead worker, is
not used.

Everything readable at scrape time (cache statistics, memory) is read by collectors
when Prometheus scrapes; only training progress is pushed, through :attr:`training`.

``/metrics`` has no authentication: binding anything but loopback logs a warning. The
listening socket is close-on-exec, and a forked child (a DataLoader worker) closes its
copy at once, so no worker keeps the port bound after the trainer exits.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import threading
import weakref
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from monitoring.alerts import AlertListener
from monitoring.cache_collector import CacheCollector, StatsSource
from monitoring.config import MonitoringConfig
from monitoring.memory_collector import MemoryCollector, MemoryReader
from monitoring.training_metrics import TrainingMetrics

logger = logging.getLogger(__name__)

# Exporters serving in this process; a forked child closes their listening sockets.
_SERVING: weakref.WeakSet[Exporter] = weakref.WeakSet()


def _close_inherited_sockets() -> None:
    # In a forked child only: close this process's copy of each listening socket (the
    # parent's stays open and keeps serving) and forget the server, whose thread did
    # not survive the fork. No lock: another thread may have held it at fork time.
    for exporter in list(_SERVING):
        server = exporter._server
        exporter._server = exporter._thread = None
        if server is not None:
            server.socket.close()
    _SERVING.clear()


os.register_at_fork(after_in_child=_close_inherited_sockets)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves to an outside address


class Exporter:
    """The ``/metrics`` endpoint of a training run.

    Args:
        config: where to listen (``host`` defaults to 127.0.0.1; ``port: 0`` picks a
            free port).
        registry: registry to fill; ``None`` creates a private one with the standard
            ``process_*`` metrics (memory, open files, CPU of this process) added.

    Attributes:
        registry: the registry served on ``/metrics``.
        training: the instruments the trainer's callback updates.
        alerts: the memory-alert listener attached to every exported cache.

    Example:
        >>> exporter = Exporter(MonitoringConfig(port=0))
        >>> exporter.add_cache(train_cache)
        >>> host, port = exporter.start()
        >>> exporter.training.observe_step(0.4, 0.01)
        >>> exporter.stop()
    """

    def __init__(self, config: MonitoringConfig, registry: CollectorRegistry | None = None) -> None:
        if not isinstance(config, MonitoringConfig):
            raise TypeError(f"config must be a MonitoringConfig, got {type(config).__name__}")
        self.config = config
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        self.training = TrainingMetrics(registry)
        self.alerts = AlertListener(registry)
        self._caches = CacheCollector(registry=registry)
        self._memory = MemoryCollector(registry=registry)
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def add_cache(self, cache: StatsSource) -> None:
        """Export ``cache``'s statistics and count its memory alerts.

        ``cache`` needs ``.name`` (the ``split`` label), ``.store.name`` (the ``store``
        label) and ``.stats()``. When it has ``add_listener`` the alert listener is
        attached; when it has a ``probe`` and no probe was set yet, memory metrics
        come from that probe.

        Raises:
            TypeError: ``cache`` lacks one of the attributes above.
            ValueError: a cache with the same name and store is already exported.
        """
        self._caches.add(cache)
        add_listener = getattr(cache, "add_listener", None)
        if callable(add_listener):
            add_listener(self.alerts)
        probe = getattr(cache, "probe", None)
        if self._memory.probe is None and callable(getattr(probe, "read", None)):
            self._memory.probe = probe

    def set_probe(self, probe: MemoryReader) -> None:
        """Read memory metrics from ``probe`` (anything with ``read()``) at each scrape."""
        if not callable(getattr(probe, "read", None)):
            raise TypeError(f"a memory probe needs a read() method, got {type(probe).__name__}")
        self._memory.probe = probe

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` while serving, else ``None``."""
        server = self._server
        if server is None:
            return None
        return self.config.host, int(server.server_address[1])

    def start(self) -> tuple[str, int]:
        """Serve ``/metrics`` from a daemon thread; returns ``(host, port)``.

        Raises:
            RuntimeError: already started, or ``monitoring.enabled`` is false.
            OSError: the address cannot be bound (the message names the setting).
        """
        cfg = self.config
        if not cfg.enabled:
            raise RuntimeError("monitoring.enabled is false: the exporter must not be started")
        if not _is_loopback(cfg.host):
            logger.warning(
                "monitoring.host=%s: /metrics is served to the network without "
                "authentication or TLS; bind 127.0.0.1 (the default) and let Prometheus "
                "reach it through an authenticating proxy or a tunnel",
                cfg.host,
            )
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"exporter already serving on {self.address}")
            try:
                self._server, self._thread = start_http_server(
                    cfg.port, addr=cfg.host, registry=self.registry
                )
            except OSError as e:
                raise OSError(e.errno, _bind_failure(cfg, e)) from e
            self._server.socket.set_inheritable(False)  # also for spawned processes
            _SERVING.add(self)
        address = self.address
        assert address is not None
        logger.info("serving metrics on http://%s:%d/metrics", *address)
        return address

    def stop(self) -> None:
        """Stop serving and release the port (no error if not started)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            _SERVING.discard(self)
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind_failure(cfg: MonitoringConfig, exc: OSError) -> str:
    """One line saying why ``/metrics`` cannot be served and what to set instead."""
    where = f"monitoring.port={cfg.port}: cannot serve /metrics on {cfg.host}:{cfg.port}"
    if cfg.port and exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: the port is in use (another run on this node?); to run a second "
            "job set monitoring.port=0 (picks a free port and logs its address) "
            "or monitoring.enabled=false"
        )
    return (
        f"{where} ({exc.strerror or exc}); set monitoring.host and monitoring.port "
        "(0 picks a free port) or monitoring.enabled=false"
    )
