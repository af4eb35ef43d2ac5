"""Map every failure to upstream's plain-text error bodies (message + newline)."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from common.errors import FactoryError

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
            log.error("request failed", extra={"error": exc.message})
        resp = text_response(exc.message if exc.status != 500 else "internal server error", exc.status)
        if exc.status == 503:
            resp.headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
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
        log.exception("unexpected error")
        return text_response("internal server error", 500)
