"""The ``/metrics`` listener on ``metrics.addr``, separate from the API's port, as upstream.

One listener per pod, in the process that owns the others: the gunicorn master of an API pod, the
Celery main process of a worker pod. It is a daemon thread started by the composition root before
gunicorn or Celery fork their workers, and lives exactly as long as that process, so "metrics down"
means "this pod is down" and nothing else. The listener only reads the multiprocess directory (and,
in the API, Redis with a client of its own), so the processes forked while it runs inherit no lock
or connection they would ever use. Binding fails at start-up, like upstream: a taken port is a
configuration error, not something to find out from a missing scrape.

Each scrape merges the directory (:mod:`common.metrics.multiprocess`), after dropping the live
gauges of processes that died without saying so, plus the ``collected`` gauges of the snapshot
functions the composition root passes (the API's view of the cluster).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from common.metrics.definitions import CLUSTER_STATE_UP, Metric
from common.metrics.multiprocess import sweep_exited

log = logging.getLogger(__name__)

#: A function returning gauge values read at scrape time (raises when its source is unreachable).
Snapshot = Callable[[], Mapping[Metric, float]]


def split_address(addr: str) -> tuple[str, int]:
    """Go's listen address: ``:2122`` means every interface; ``[::1]:2122`` an IPv6 host."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid metrics.addr {addr!r}: expected [host]:port")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


class LiveProcessesCollector(Collector):
    """The multiprocess directory, without the live gauges of processes that no longer exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._merged = MultiProcessCollector(None, str(path))

    def collect(self) -> Iterator[Any]:
        sweep_exited(self.path)
        return iter(self._merged.collect())


class SnapshotCollector(Collector):
    """Gauges read at scrape time; ``image_factory_cluster_state_up`` says whether that worked."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._warned_at = 0.0

    def collect(self) -> Iterator[Any]:
        try:
            values = dict(self.snapshot())
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:  # once a minute, not once per scrape
                self._warned_at = now
                log.warning("cannot read the cluster state for metrics", extra={"error": str(exc)})
            values = {}
            up = 0.0
        else:
            up = 1.0
        values[CLUSTER_STATE_UP] = up
        for metric, value in values.items():
            family = GaugeMetricFamily(metric.name, metric.help)
            family.add_metric([], float(value))
            yield family


class MetricsServer:
    """``/metrics`` on ``addr`` for the multiprocess directory ``path`` plus ``snapshots``."""

    def __init__(self, addr: str, path: Path, snapshots: Sequence[Snapshot] = ()) -> None:
        self.host, self.port = split_address(addr)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LiveProcessesCollector(path))
        for snapshot in snapshots:
            self.registry.register(SnapshotCollector(snapshot))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        """Binds now (OSError when the address is taken) and serves on a daemon thread."""
        self._server, self._thread = start_http_server(self.port, self.host, self.registry)
        self.port = self._server.server_address[1]  # the real one when asked for port 0
        log.info("serving metrics", extra={"listen_addr": f"{self.host}:{self.port}"})
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


__all__ = ["LiveProcessesCollector", "MetricsServer", "Snapshot", "SnapshotCollector", "split_address"]
