"""Map every failure to upstream's plain-text error bodies (message + newline).

Clients of a 500 get upstream's bare ``internal server error``; the log gets the cause: every 5xx is
logged with the exception and its traceback, the request id and, once the request named a build, the
build key. A build's failure is the worker's, so its line carries the cause and the worker's
traceback as the build record kept them.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.middleware import mark_raised
from common.errors import FactoryError
from common.logging import build_key_var, request_id_var
from common.outages import OUTAGE_ERRORS, as_unavailable

log = logging.getLogger(__name__)


def text_response(message: str, status: int) -> Response:
    resp = Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def register_error_handlers(app: Flask) -> None:
    max_body = app.config.get("MAX_CONTENT_LENGTH")

    @app.errorhandler(FactoryError)
    def factory_error(exc: FactoryError) -> Response:
        if exc.status >= 500:
            log_failure(exc, exc.status)
        resp = text_response(exc.message if exc.status != 500 else "internal server error", exc.status)
        if exc.status == 503:
            resp.headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
        return resp

    def outage(exc: Exception) -> Response:
        """Redis or the broker is down: 503 + Retry-After, as for any unavailable dependency."""
        return factory_error(as_unavailable(exc))

    for kind in OUTAGE_ERRORS:
        app.register_error_handler(kind, outage)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if request.path.startswith("/v2/"):  # no /v2 route matched (e.g. a newline in a name)
            from api.registry.errors import error_response  # here: api.registry.errors imports this module

            if status == 404:
                return error_response(404, "404 page not found", "NAME_UNKNOWN")
            return error_response(status, exc.description or exc.name)
        if status == 404:
            message = "404 page not found"
        elif status == 405:
            message = "Method Not Allowed"
        elif isinstance(exc, RequestEntityTooLarge):
            message = f"request body too large: the limit is {max_body} bytes"
        else:
            message = exc.description or exc.name
        resp = text_response(message, status)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log_failure(exc, 500)
        return text_response("internal server error", 500)


def log_failure(exc: BaseException, status: int) -> None:
    """One error line for a 5xx: what failed and why, with the request id and the build key (every
    error handler that answers a 5xx calls it, the registry frontend's too)."""
    if status == 500 and has_request_context():
        mark_raised(request.environ)  # http_request_exceptions_total (api.metrics)
    fields: dict[str, object] = {
        "status": status,
        "request_id": request_id_var.get(),
        "error": str(exc),
        "cause": f"{type(exc).__name__}: {exc}",
    }
    key = getattr(exc, "key", "") or build_key_var.get()
    if key:
        fields["key"] = key
    cause = getattr(exc, "cause", None)
    if isinstance(cause, str):  # a build's failure (common.delivery.BuildFailedError): the worker's cause
        fields["cause"] = cause or "unknown (the build record kept no cause)"
        fields["worker_traceback"] = getattr(exc, "traceback", "")
        log.error("request failed: build %s failed: %s", key, fields["cause"], extra=fields)
        return
    # a 503 names the dependency that is down; its traceback, once per request of an outage, says nothing more
    log.error("request failed: %s", fields["cause"], exc_info=exc if status != 503 else None, extra=fields)
