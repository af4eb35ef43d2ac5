"""Request id, Server header and one structured log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from common.logging import build_key_var, request_id_var
from common.version import SERVER_HEADER

log = logging.getLogger("api.request")

# Echo what the client sent when it is a sane token; anything else gets a fresh id, so a
# hostile header can neither inject into logs nor grow without bound.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def register_middleware(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        g.request_id = rid
        g.started = time.perf_counter()
        g.request_id_token = request_id_var.set(rid)
        g.build_key_token = build_key_var.set("")  # set once the request names a build (Delivery.locate)

    @app.after_request
    def finish(response: Response) -> Response:
        if request.environ.get("SERVER_SOFTWARE") != SERVER_HEADER:  # gunicorn already sends it
            response.headers["Server"] = SERVER_HEADER
        rid = g.get("request_id")
        if rid:
            response.headers["X-Request-ID"] = rid
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        level = (
            logging.ERROR
            if response.status_code >= 500
            else (logging.WARNING if response.status_code >= 400 else logging.INFO)
        )
        log.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration": round(duration, 6),
                "request_id": rid,
            },
        )
        return response

    @app.teardown_request
    def reset(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)
        key_token = g.pop("build_key_token", None)
        if key_token is not None:
            build_key_var.reset(key_token)
