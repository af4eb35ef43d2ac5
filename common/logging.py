"""Structured JSON logs on stderr, with the request id (and build key) of what is being served or built."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

#: The X-Request-ID of the HTTP request (or of the request that enqueued a Celery task).
request_id_var: ContextVar[str] = ContextVar("request_id", default="")
#: The build key (profile hash) the current HTTP request is about, once known: every later log line of
#: the request carries it as ``key``, as the worker's lines about that build do.
build_key_var: ContextVar[str] = ContextVar("build_key", default="")

#: Upstream's zap levels; dpanic/panic/fatal have no Python counterpart and map to CRITICAL.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        key = build_key_var.get()
        if key and not hasattr(record, "key"):
            record.key = key
        return True


def configure_logging(level: str = "info") -> None:
    """Idempotent: replaces root handlers with one JSON-lines handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
