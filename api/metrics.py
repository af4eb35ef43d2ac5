"""HTTP metrics per route, in upstream's (go-http-metrics) shape, recorded by ``api.middleware``.

* ``http_request_duration_seconds{method,handler,status}``, ``http_request_total{method,status}`` and
  ``http_request_exceptions_total{method,status}``: the names, labels, help texts and (Prometheus'
  default) buckets prometheus-flask-exporter gave them when it recorded them
  (:data:`common.metrics.definitions.FLASK_EXPORTER`); ``handler`` is the route pattern in
  upstream's spelling (``/image/:schematic/:version/:path``; ``unmatched`` for requests no route
  took). The status label is ``status`` (upstream's is ``code``).
* ``http_response_size_bytes`` and ``http_requests_inflight`` (upstream's names and labels).

They are recorded here through :class:`common.metrics.Metrics` rather than by the exporter's own
hooks: those cost about as much as the rest of a cached-asset redirect (``bench/delivery.py
--metrics``). The API's backend buffers its writes (:meth:`common.metrics.Metrics.buffer_writes`,
:data:`FLUSH_INTERVAL`), so a scrape sees events up to that late.

As before, the duration and the in-flight time end when the view's response is ready: a streamed
download's when its first byte is, not its last (upstream measures the whole write); its size is the
``Content-Length`` it announced. A view that raises what no error handler expected is counted as
the exporter counted it: a 500 in the three series, and in ``http_request_exceptions_total`` (the
exporter's teardown hook never saw those, since ``api.errors`` answers every exception).

With metrics disabled (``metrics.addr`` empty) nothing is recorded and requests pay nothing.
"""

from __future__ import annotations

import functools
import re

from flask import Request

from common.metrics import Metrics
from common.metrics.definitions import (
    HTTP_DURATION,
    HTTP_EXCEPTIONS,
    HTTP_INFLIGHT,
    HTTP_REQUESTS,
    HTTP_RESPONSE_SIZE,
)
from common.metrics.multiprocess import process_exited

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
#: Our route parameters named as upstream's routes name them.
_UPSTREAM_NAMES = {"schematic_id": "schematic"}
#: Seconds a scrape may lag the API's requests (the backend writes its buffered events this often).
FLUSH_INTERVAL = 1.0


@functools.lru_cache(maxsize=256)  # one entry per route: a regex substitution per request otherwise
def route_pattern(rule: str) -> str:
    """``/image/<schematic_id>/<version>/<path>`` → ``/image/:schematic/:version/:path`` (httprouter
    syntax; a ``<path:x>`` catch-all becomes ``*x``)."""

    def spell(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        name = _UPSTREAM_NAMES.get(name, name)
        return f"*{name}" if converter == "path" else f":{name}"

    return _PARAM.sub(spell, rule)


def handler(req: Request) -> str:
    """The ``handler`` label."""
    rule = req.url_rule
    return route_pattern(rule.rule) if rule is not None else "unmatched"


class HttpMetrics:
    """The HTTP series, recorded by ``api.middleware`` (one call when a request is routed, one when
    its response is ready, one when it is over)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        metrics.buffer_writes(FLUSH_INTERVAL)

    def entered(self, label: str) -> None:
        self.metrics.inc(HTTP_INFLIGHT, handler=label)

    def answered(
        self, method: str, label: str, status: str, elapsed: float, size: int | None, *, raised: bool
    ) -> None:
        metrics = self.metrics
        metrics.observe(HTTP_DURATION, max(elapsed, 0.0), method=method, handler=label, status=status)
        metrics.inc(HTTP_REQUESTS, method=method, status=status)
        if size is not None:
            metrics.observe(HTTP_RESPONSE_SIZE, size, method=method, handler=label, status=status)
        if raised:
            metrics.inc(HTTP_EXCEPTIONS, method=method, status=status)

    def left(self, label: str) -> None:
        self.metrics.inc(HTTP_INFLIGHT, -1, handler=label)


def http_metrics(metrics: Metrics) -> HttpMetrics | None:
    """The recorder, or None with metrics disabled (``metrics.addr`` empty): requests pay nothing."""
    return HttpMetrics(metrics) if metrics.collector_registry is not None else None


def child_exit(_server: object, worker: object) -> None:
    """gunicorn's ``child_exit`` hook (in the master): the worker's live gauges stop counting."""
    pid = getattr(worker, "pid", None)
    if isinstance(pid, int):
        process_exited(pid)
