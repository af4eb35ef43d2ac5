"""HTTP metrics per route, in upstream's (go-http-metrics) shape, recorded by three request hooks.

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
``Content-Length`` it announced. A view that raises is counted as the exporter counted it: a 500 in
the three series, and in ``http_request_exceptions_total``.

With metrics disabled (``metrics.addr`` empty) no hook is registered and requests pay nothing.
"""

from __future__ import annotations

import functools
import re
from time import perf_counter

from flask import Flask, Request, Response, request

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
#: Where a request keeps what the hooks share (attributes of the Request object, no ``g`` lookups).
_HANDLER, _START, _DONE = "_metrics_handler", "_metrics_start", "_metrics_done"


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


def instrument(app: Flask, metrics: Metrics) -> None:
    if metrics.collector_registry is None:
        return
    metrics.buffer_writes(FLUSH_INTERVAL)

    def record(req: Request, status: str, size: int | None) -> None:
        setattr(req, _DONE, True)
        label = getattr(req, _HANDLER, None) or handler(req)
        start = getattr(req, _START, None)
        method = req.method
        if start is not None:
            elapsed = max(perf_counter() - start, 0.0)
            metrics.observe(HTTP_DURATION, elapsed, method=method, handler=label, status=status)
        metrics.inc(HTTP_REQUESTS, method=method, status=status)
        if size is not None:
            metrics.observe(HTTP_RESPONSE_SIZE, size, method=method, handler=label, status=status)

    @app.before_request
    def enter() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not six
        label = handler(req)
        setattr(req, _START, perf_counter())
        setattr(req, _HANDLER, label)
        metrics.inc(HTTP_INFLIGHT, handler=label)

    @app.after_request
    def measure(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        size = 0 if req.method == "HEAD" else response.content_length
        if size is None and not response.is_streamed:
            size = response.calculate_content_length()
        record(req, str(response.status_code), size)
        return response

    @app.teardown_request
    def leave(exc: BaseException | None) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        if exc is not None:
            metrics.inc(HTTP_EXCEPTIONS, method=req.method, status="500")
            if not getattr(req, _DONE, False):  # no response went through after_request
                record(req, "500", None)
        label = getattr(req, _HANDLER, None)
        if label is not None:
            metrics.inc(HTTP_INFLIGHT, -1, handler=label)


def child_exit(_server: object, worker: object) -> None:
    """gunicorn's ``child_exit`` hook (in the master): the worker's live gauges stop counting."""
    pid = getattr(worker, "pid", None)
    if isinstance(pid, int):
        process_exited(pid)
