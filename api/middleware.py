"""Request id, Server header and one structured log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from common.logging import build_key_var, request_id_var
from common.version import SERVER_HEADER

#: The logger of the one line per request (written from a thread of its own under gunicorn: api/server.py).
ACCESS_LOGGER = "api.request"
log = logging.getLogger(ACCESS_LOGGER)

# Echo what the client sent when it is a sane token; anything else gets a fresh id, so a
# hostile header can neither inject into logs nor grow without bound.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
#: The access line's ``lineno`` (it never changes: see ``finish``).
_LINE = 0


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
        status = response.status_code
        level = logging.ERROR if status >= 500 else (logging.WARNING if status >= 400 else logging.INFO)
        if log.isEnabledFor(level):
            now = time.perf_counter()
            fields = {
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration": round(now - g.get("started", now), 6),
                "request_id": rid,
            }
            # log.log() would walk the stack for the caller's file and line (logging.findCaller) on
            # every request, a third of the line's cost (bench/delivery.py); this line's origin is fixed.
            log.handle(log.makeRecord(log.name, level, __file__, _LINE, "request", (), None, extra=fields))
        return response

    @app.teardown_request
    def reset(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)
        key_token = g.pop("build_key_token", None)
        if key_token is not None:
            build_key_var.reset(key_token)
