"""The Prometheus backend of :class:`common.metrics.Metrics`: prometheus_client metrics from the table.

In multiprocess mode (``image-factory api|worker``, see :mod:`common.metrics.multiprocess`) a process
has exactly one backend: two metric objects of the same name in one process would write the same
slot of the same file and overwrite each other's counts, so :func:`process_backend` hands out one
instance per process. Its metrics are registered nowhere: what is served is read from the files.
A process forked after the backend was created (gunicorn's workers from the master that preloaded
the app) gets files of its own on its first write; prometheus_client notices the new pid.

Without multiprocess mode (tests, the thin entry points) every backend has a registry of its own,
which :func:`generate_latest` renders.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client import values as _values

from common.metrics.definitions import DEFINITIONS, Kind, Metric
from common.metrics.multiprocess import ENV

log = logging.getLogger(__name__)

#: Label combinations remembered for the fast path; past this, recording takes the checked path.
MAX_CHILDREN = 10_000


def multiprocess_mode() -> bool:
    """True when values go to the multiprocess directory.

    Raises RuntimeError when the directory is set but prometheus_client was imported before it was
    (the composition root must create it first): values would silently stay in this process.
    """
    if not os.environ.get(ENV):
        return False
    if not getattr(_values.ValueClass, "_multiprocess", False):
        raise RuntimeError(f"prometheus_client was imported before {ENV} was set; metrics would be lost")
    return True


class PrometheusMetrics:
    def __init__(self, *, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        # Multiprocess: a private registry for the Flask exporter's metrics to register in (values go
        # to the files whatever the registry); single-process: the registry that is rendered.
        self._registry = CollectorRegistry(auto_describe=True)
        self._target = None if multiprocess else self._registry
        self._definitions = {m.name: m for m in DEFINITIONS if not m.collected}
        # Counters and histograms start at zero in every process (so a rate has its first point);
        # a gauge exists once a process sets it, so a worker's gauges do not show up as zeros on an
        # API's /metrics and the other way round.
        self._metrics: dict[str, Any] = {
            m.name: _create(m, self._target) for m in self._definitions.values() if m.kind is not Kind.GAUGE
        }
        self._failed: set[str] = set()
        #: (name, *label items as passed) → (the definition, its prometheus_client child)
        self._children: dict[tuple[Any, ...], tuple[Metric, Any]] = {}

    @property
    def collector_registry(self) -> CollectorRegistry:
        return self._registry

    def inc(self, metric: Metric, amount: float = 1.0, /, **labels: str) -> None:
        if metric.kind is Kind.HISTOGRAM:
            raise ValueError(f"{metric.name} is a histogram: observe it")
        self._record(metric, labels, "inc", amount)

    def observe(self, metric: Metric, value: float, /, **labels: str) -> None:
        if metric.kind is not Kind.HISTOGRAM:
            raise ValueError(f"{metric.name} is a {metric.kind}, not a histogram")
        self._record(metric, labels, "observe", value)

    def set(self, metric: Metric, value: float, /, **labels: str) -> None:
        if metric.kind is not Kind.GAUGE:
            raise ValueError(f"{metric.name} is a {metric.kind}, not a gauge")
        self._record(metric, labels, "set", value)

    def _record(self, metric: Metric, labels: dict[str, str], op: str, value: float) -> None:
        # The hot path (several events per HTTP request): a child seen before is looked up by name and
        # label values as given, without checking the definition again or building label dicts.
        memo = (metric.name, *labels.items())
        child = self._children.get(memo)
        if child is not None and child[0] is metric:
            with _WRITE_LOCK:
                try:
                    getattr(child[1], op)(value)
                except OSError as exc:
                    self._write_failed(metric, exc)
            return
        if self._definitions.get(metric.name) != metric:
            raise ValueError(f"{metric.name} is not recorded by events")
        if set(labels) != set(metric.labels):
            raise ValueError(f"{metric.name} takes labels {list(metric.labels)}, not {sorted(labels)}")
        with _WRITE_LOCK:
            found = self._metrics.get(metric.name)
            if found is None:
                found = self._metrics[metric.name] = _create(metric, self._target)
            try:
                made = found.labels(**{k: str(v) for k, v in labels.items()}) if metric.labels else found
                if len(self._children) < MAX_CHILDREN:
                    self._children[memo] = (metric, made)
                getattr(made, op)(value)
            except OSError as exc:
                self._write_failed(metric, exc)

    def _write_failed(self, metric: Metric, exc: OSError) -> None:
        """The directory's disk is full: logged once per metric, the request must not fail for it."""
        if metric.name not in self._failed:
            self._failed.add(metric.name)
            log.warning("cannot record a metric", extra={"metric": metric.name, "error": str(exc)})


#: Held around every write. In multiprocess mode prometheus_client guards its files with one lock per
#: process; a fork while another thread holds it (the Celery main process forks pool processes while
#: its heartbeat or prebuild threads record) would leave the child a lock nobody releases. Writes go
#: through this lock, which a fork takes first, so no write is half-way when the child is made.
_WRITE_LOCK = threading.Lock()
os.register_at_fork(
    before=_WRITE_LOCK.acquire, after_in_parent=_WRITE_LOCK.release, after_in_child=_WRITE_LOCK.release
)


def _create(metric: Metric, registry: CollectorRegistry | None) -> Any:
    if metric.kind is Kind.COUNTER:
        return Counter(metric.name, metric.help, metric.labels, registry=registry)
    if metric.kind is Kind.HISTOGRAM:
        return Histogram(metric.name, metric.help, metric.labels, registry=registry, buckets=metric.buckets)
    return Gauge(
        metric.name,
        metric.help,
        metric.labels,
        registry=registry,
        multiprocess_mode=metric.gauge_mode,  # type: ignore[arg-type]
    )


_shared: PrometheusMetrics | None = None
_shared_lock = threading.Lock()


def process_backend() -> PrometheusMetrics:
    """This process's multiprocess backend (one per process), or a new single-process one."""
    global _shared
    if not multiprocess_mode():
        return PrometheusMetrics()
    with _shared_lock:
        if _shared is None:
            _shared = PrometheusMetrics(multiprocess=True)
        return _shared


def generate_latest(backend: PrometheusMetrics) -> bytes:
    """The text exposition of a single-process backend (tests)."""
    return _generate_latest(backend.collector_registry)


__all__ = ["PrometheusMetrics", "generate_latest", "multiprocess_mode", "process_backend"]
