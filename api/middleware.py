"""Request id, Server header, HTTP metrics and one structured log line per request: one WSGI middleware.

Why WSGI and not Flask's ``before_request``/``after_request``/``teardown_request`` hooks: Flask runs
each hook through ``ensure_sync`` (an ``inspect.iscoroutinefunction`` check per hook per request) and
every ``g``/``request`` access through a context-local proxy. Six hooks (three here, three for the
metrics) cost about 150 µs per request in-process, more than the whole cached-asset redirect without
them (``bench/delivery.py``; issue 18's 0.8x target). Here one plain callable does all of it around
the app, and one overridden method (:class:`FactoryFlask`) learns the route once Flask has matched it.

* ``X-Request-ID``: the client's when it is a sane token, else a fresh UUID; in ``request_id_var``
  for every log line of the request (``common.logging``), echoed in the response.
* ``Server``: ours, unless gunicorn already sends it (``api.server.brand_gunicorn``).
* The access line (logger :data:`ACCESS_LOGGER`, written by a thread of its own under gunicorn:
  ``api.server``) and the HTTP series of ``api.metrics``, both when the response is ready (a
  streamed download's first byte, not its last, as prometheus-flask-exporter measured).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from flask import Flask, Request
from flask.globals import request_ctx

from api.metrics import HttpMetrics, handler
from common.logging import build_key_var, request_id_var
from common.version import SERVER_HEADER

#: The logger of the one line per request (written from a thread of its own under gunicorn: api/server.py).
ACCESS_LOGGER = "api.request"
log = logging.getLogger(ACCESS_LOGGER)

# Echo what the client sent when it is a sane token; anything else gets a fresh id, so a
# hostile header can neither inject into logs nor grow without bound.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
#: The access line's ``lineno`` (it never changes: see ``_log``).
_LINE = 0
#: The environ key of a request's :class:`Observed` state.
ENVIRON_KEY = "image_factory.observed"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Observed:
    """What one request's middleware and its Flask side share (in the WSGI environ)."""

    __slots__ = ("label", "raised", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.label: str | None = None  # the route pattern, once Flask matched the request
        self.raised = False  # a view raised what became a 500 (``mark_raised``)


def observed(environ: dict[str, Any]) -> Observed | None:
    found = environ.get(ENVIRON_KEY)
    return found if isinstance(found, Observed) else None


def mark_raised(environ: dict[str, Any]) -> None:
    """A view raised an exception that no handler expected (``http_request_exceptions_total``)."""
    state = observed(environ)
    if state is not None:
        state.raised = True


class FactoryFlask(Flask):
    """Flask, telling :class:`RequestMiddleware` which route matched, and counting it in flight."""

    http_metrics: HttpMetrics | None = None

    def dispatch_request(self) -> Any:  # Flask's own annotation: ft.ResponseReturnValue
        req: Request = request_ctx.request
        state = observed(req.environ)
        if state is not None and state.label is None:
            state.label = handler(req)
            if self.http_metrics is not None:
                self.http_metrics.entered(state.label)
        return super().dispatch_request()

    def handle_exception(self, e: Exception) -> Any:
        """An exception no error handler took (Flask answers 500): counted as one a view raised."""
        mark_raised(request_ctx.request.environ)
        return super().handle_exception(e)


def install(app: FactoryFlask, metrics: HttpMetrics | None) -> None:
    """Observe every request of ``app``: wraps its ``wsgi_app`` (call before outer middleware)."""
    app.http_metrics = metrics
    app.wsgi_app = RequestMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]


class RequestMiddleware:
    """Wraps the Flask app (inside CORS: a preflight never reaches it, as with Flask's hooks before)."""

    def __init__(self, app: WSGIApp, metrics: HttpMetrics | None) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        rid = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        state = Observed(rid)
        environ[ENVIRON_KEY] = state
        add_server = environ.get("SERVER_SOFTWARE") != SERVER_HEADER
        answered = False

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal answered
            if add_server:
                headers.append(("Server", SERVER_HEADER))
            headers.append(("X-Request-ID", rid))
            if not answered:
                answered = True
                self._finished(environ, state, int(status[:3]), headers, perf_counter() - started)
            return start_response(status, headers, exc_info)

        rid_token = request_id_var.set(rid)
        key_token = build_key_var.set("")  # set once the request names a build (Delivery.locate)
        try:
            return self.app(environ, start)
        except BaseException:
            if not answered:  # nothing reached the client: count and log it as the 500 gunicorn sends
                state.raised = True
                self._finished(environ, state, 500, [], perf_counter() - started)
            raise
        finally:
            build_key_var.reset(key_token)
            request_id_var.reset(rid_token)
            if self.metrics is not None and state.label is not None:
                self.metrics.left(state.label)

    def _finished(
        self,
        environ: dict[str, Any],
        state: Observed,
        status: int,
        headers: list[tuple[str, str]],
        elapsed: float,
    ) -> None:
        method = environ.get("REQUEST_METHOD", "GET")
        if self.metrics is not None:
            size: int | None = 0
            if method != "HEAD":
                length = next((v for k, v in headers if k.lower() == "content-length"), None)
                size = int(length) if length is not None and length.isdigit() else None
            label = state.label or "unmatched"
            self.metrics.answered(method, label, str(status), elapsed, size, raised=state.raised)
        level = logging.ERROR if status >= 500 else (logging.WARNING if status >= 400 else logging.INFO)
        if log.isEnabledFor(level):
            req = environ.get("werkzeug.request")
            fields = {
                "method": method,
                "path": req.path if isinstance(req, Request) else environ.get("PATH_INFO", ""),
                "status": status,
                "duration": round(elapsed, 6),
                "request_id": state.request_id,
            }
            # log.log() would walk the stack for the caller's file and line (logging.findCaller) on
            # every request, a third of the line's cost (bench/delivery.py); this line's origin is fixed.
            log.handle(log.makeRecord(log.name, level, __file__, _LINE, "request", (), None, extra=fields))
