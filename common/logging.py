"""Structured JSON logs on stderr, with the request id of whatever is being served or built."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

#: The X-Request-ID of the HTTP request (or of the request that enqueued a Celery task).
request_id_var: ContextVar[str] = ContextVar("request_id", default="")

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
