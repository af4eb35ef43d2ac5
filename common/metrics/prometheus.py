"""The Prometheus backend of :class:`common.metrics.Metrics`: prometheus_client metrics from the table.

In multiprocess mode (``image-factory api|worker``, see :mod:`common.metrics.multiprocess`) a process
has exactly one backend: two metric objects of the same name in one process would write the same
slot of the same file and overwrite each other's counts, so :func:`process_backend` hands out one
instance per process. Its metrics are registered nowhere: what is served is read from the files.
A process forked after the backend was created (gunicorn's workers from the master that preloaded
the app) gets files of its own on its first write; prometheus_client notices the new pid.

Without multiprocess mode (tests, the thin entry points) every backend has a registry of its own,
which :func:`generate_latest` renders.

**Buffered writes** (:meth:`PrometheusMetrics.buffer_writes`, which the API turns on for its HTTP hot
path): a write to a multiprocess file costs prometheus_client's lock, a pid check and a struct pack
into the mmap (histograms: the sum and a bucket), about ten per HTTP request. Buffered, an event of a
series seen before only adds to that series' pending delta in memory (a histogram: its sum and one
bucket count, found by bisection as prometheus_client's ``observe`` finds it), and a daemon thread of
each process writes the pending deltas every ``interval`` seconds, one write per changed series and
not per event; the process's exit (``atexit``: gunicorn's workers leave through ``sys.exit``) writes
the rest. What a scrape sees is therefore up to ``interval`` old, and a process killed with SIGKILL
loses at most its last ``interval`` of events. ``set`` is written at once (it drops the pending delta
it overrides). A process forked while events were pending starts with none: they are its parent's to
write. Without multiprocess mode values are in memory anyway and writes are never buffered.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client import values as _values

from common.metrics.definitions import DEFINITIONS, Kind, Metric
from common.metrics.multiprocess import ENV

log = logging.getLogger(__name__)

#: Label combinations remembered for the fast path; past this, recording takes the checked path.
MAX_CHILDREN = 10_000


class _Pending:
    """Events of one series not yet written to its multiprocess file (buffered mode)."""

    __slots__ = ("bounds", "child", "counts", "delta", "metric", "observed", "queued", "total")

    def __init__(self, metric: Metric, child: Any) -> None:
        self.metric = metric
        self.child = child
        self.delta = 0.0  # counters, gauges' inc
        self.queued = False  # in the backend's queue of series to write
        # Histograms: the sum and a count per bucket (prometheus_client keeps its buckets
        # non-cumulative in the files, one per upper bound, +Inf last).
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds) if metric.kind is Kind.HISTOGRAM else ()
        self.counts = [0] * len(self.bounds)
        self.observed = 0
        self.total = 0.0

    def write(self) -> None:
        """Adds what is pending to the files (the caller holds the write lock) and forgets it."""
        delta, self.delta = self.delta, 0.0
        if delta:
            self.child.inc(delta)
        if self.observed:
            counts, self.counts = self.counts, [0] * len(self.bounds)
            total, self.total, self.observed = self.total, 0.0, 0
            # prometheus_client's Histogram keeps one value per bucket and one for the sum
            # (``Histogram._buckets``, ``Histogram._sum``, as ``observe`` writes them).
            self.child._sum.inc(total)
            for index, count in enumerate(counts):
                if count:
                    self.child._buckets[index].inc(count)

    def forget(self) -> None:
        self.delta, self.total, self.observed, self.queued = 0.0, 0.0, 0, False
        self.counts = [0] * len(self.bounds)


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
        # Single-process: the registry that is rendered. Multiprocess: unused (values go to the files
        # and the listener reads those), kept so the property means the same in both modes.
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
        #: (name, *label items as passed) → (the definition, its prometheus_client child, its pending
        #: events when writes are buffered)
        self._children: dict[tuple[Any, ...], tuple[Metric, Any, _Pending | None]] = {}
        self._interval = 0.0  # > 0: writes are buffered
        #: id of a prometheus_client child → its pending events (one per series, however many memo
        #: entries, i.e. label orders, lead to it)
        self._pending: dict[int, _Pending] = {}
        self._queue: list[_Pending] = []  # series with pending events, in the order first touched
        self._flusher_pid = 0  # the process whose flusher thread runs

    def buffer_writes(self, interval: float) -> None:
        """From now on, hold the events of series seen before in memory and write them every
        ``interval`` seconds and at exit (multiprocess mode only; see the module's docstring)."""
        if not self.multiprocess or interval <= 0 or self._interval:
            return
        with _WRITE_LOCK:
            self._interval = interval
            for memo, (metric, child, _) in list(self._children.items()):
                self._children[memo] = (metric, child, self._pending_for(metric, child))
        atexit.register(self.flush)
        os.register_at_fork(after_in_child=self._forget_pending)

    def _pending_for(self, metric: Metric, child: Any) -> _Pending:
        found = self._pending.get(id(child))
        if found is None:
            found = self._pending[id(child)] = _Pending(metric, child)
        return found

    def flush(self) -> None:
        """Writes every pending event now."""
        with _WRITE_LOCK:
            queue, self._queue = self._queue, []
            for pending in queue:
                pending.queued = False
                try:
                    pending.write()
                except OSError as exc:
                    self._write_failed(pending.metric, exc)

    def _forget_pending(self) -> None:
        """In a child just forked: the pending events are the parent's to write."""
        for pending in self._queue:
            pending.forget()
        self._queue = []
        self._flusher_pid = 0

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()

    def _hold(self, pending: _Pending, op: str, value: float) -> None:
        if op == "inc" and value < 0 and pending.metric.kind is Kind.COUNTER:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        pid = os.getpid()
        with _WRITE_LOCK:
            if op == "inc":
                pending.delta += value
            else:  # observe: the bucket prometheus_client's observe would count it in
                pending.total += value
                pending.observed += 1
                pending.counts[bisect_left(pending.bounds, value)] += 1
            if not pending.queued:
                pending.queued = True
                self._queue.append(pending)
            start = self._flusher_pid != pid
            self._flusher_pid = pid
        if start:  # the first buffered event of this process (a forked one has no flusher thread)
            threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

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
            pending = child[2]
            if pending is not None and op != "set":
                self._hold(pending, op, value)
                return
            with _WRITE_LOCK:
                if pending is not None:
                    pending.delta = 0.0  # a set overrides the increments not yet written
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
                    pending = self._pending_for(metric, made) if self._interval else None
                    self._children[memo] = (metric, made, pending)
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
