"""HTTP metrics per route, in upstream's (go-http-metrics) shape as far as the Flask exporter allows.

* ``http_request_duration_seconds{method,handler,status}``: prometheus-flask-exporter, unprefixed,
  Prometheus' default buckets, ``handler`` the route pattern in upstream's spelling
  (``/image/:schematic/:version/:path``; ``unmatched`` for requests no route took). The exporter
  names the status label ``status`` (upstream's is ``code``); it also exports ``http_request_total``,
  ``http_request_exceptions_total`` and ``exporter_info``.
* ``http_response_size_bytes`` and ``http_requests_inflight`` (upstream's names, recorded here
  through :class:`common.metrics.Metrics` with the same labels).

As the exporter measures until the view returns, a streamed download's duration and in-flight time
end when its first byte is ready, not when its last one is sent (upstream measures the whole write);
its size is the ``Content-Length`` it announced.

With metrics disabled (``metrics.addr`` empty) nothing is registered and requests pay nothing.
"""

from __future__ import annotations

import functools
import re

from flask import Flask, Request, Response, g, request

from common.metrics import Metrics
from common.metrics.definitions import HTTP_INFLIGHT, HTTP_RESPONSE_SIZE
from common.metrics.multiprocess import process_exited

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
#: Our route parameters named as upstream's routes name them.
_UPSTREAM_NAMES = {"schematic_id": "schematic"}


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
    """The ``handler`` label (the exporter names the label after this function)."""
    rule = req.url_rule
    return route_pattern(rule.rule) if rule is not None else "unmatched"


def instrument(app: Flask, metrics: Metrics) -> None:
    registry = metrics.collector_registry
    if registry is None:
        return
    from prometheus_flask_exporter import NO_PREFIX, PrometheusMetrics

    # path=None: no /metrics route on the API port; the listener on metrics.addr serves them.
    PrometheusMetrics(app, path=None, defaults_prefix=NO_PREFIX, group_by=handler, registry=registry)

    @app.before_request
    def enter() -> None:
        label = handler(request)
        g.metrics_handler = label
        metrics.inc(HTTP_INFLIGHT, handler=label)

    @app.after_request
    def measure(response: Response) -> Response:
        label = g.get("metrics_handler") or handler(request)
        size = 0 if request.method == "HEAD" else response.content_length
        if size is None and not response.is_streamed:
            size = response.calculate_content_length()
        if size is not None:
            status = str(response.status_code)
            metrics.observe(HTTP_RESPONSE_SIZE, size, method=request.method, handler=label, status=status)
        return response

    @app.teardown_request
    def leave(_exc: BaseException | None) -> None:
        label = g.pop("metrics_handler", None)
        if label is not None:
            metrics.inc(HTTP_INFLIGHT, -1, handler=label)


def child_exit(_server: object, worker: object) -> None:
    """gunicorn's ``child_exit`` hook (in the master): the worker's live gauges stop counting."""
    pid = getattr(worker, "pid", None)
    if isinstance(pid, int):
        process_exited(pid)
