"""Structured JSON logs on stderr, with the request id (and build key) of what is being served or built."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TextIO

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


class BackgroundStreamHandler(logging.Handler):
    """Formats on the caller's thread, writes from a thread of its own.

    For the API's one line per request: with ``StreamHandler`` every gunicorn thread takes the
    handler's lock for the ``write`` to stderr, and under load a quarter of a worker's samples were
    threads waiting on that lock (py-spy during ``bench/delivery.py``). Here a request only formats its
    line (context variables are read on its own thread) and puts it on a queue. The writer thread is
    started per process on first use (gunicorn forks workers after logging is configured); lines still
    queued are written at interpreter exit. A process killed with SIGKILL may lose its last lines,
    which is why only the access line goes this way: error lines stay synchronous.

    The writer writes what is queued, then sleeps :data:`WRITE_INTERVAL`. Woken for every line, it
    took the GIL from the request threads once per request: about 50 µs of API CPU per cached-asset
    redirect, a fifth of it (``bench/delivery.py``). Lines now reach the stream at most that late.
    """

    #: Seconds the writer waits after each write, so that lines are written in batches.
    WRITE_INTERVAL = 0.05

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pid = -1
        self._queue: queue.SimpleQueue[str | threading.Event] = queue.SimpleQueue()
        self._start_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return True
        if self._pid != os.getpid():
            self._start()
        self._queue.put(line)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # only reached through Handler.handle
        self.handle(record)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()  # a forked child drops its parent's pending lines
            threading.Thread(target=self._run, args=(self._queue,), name="log-writer", daemon=True).start()
            atexit.register(self.drain)

    def _run(self, pending: queue.SimpleQueue[str | threading.Event]) -> None:
        """The one writer: lines in the order they were queued, then wakes ``drain`` calls waiting on
        a marker queued after them."""
        while True:
            batch = [pending.get()]
            try:
                while len(batch) < 1024:
                    batch.append(pending.get_nowait())
            except queue.Empty:
                pass
            lines = [item for item in batch if isinstance(item, str)]
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # stderr closed at exit: nothing left to tell
                    pass
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            time.sleep(self.WRITE_INTERVAL)

    def drain(self, timeout: float = 5.0) -> None:
        """Waits (at most ``timeout``) until every line queued so far is written (at exit; tests)."""
        if self._pid != os.getpid():
            return
        written = threading.Event()
        self._queue.put(written)
        written.wait(timeout)


def configure_logging(level: str = "info", *, background: Iterable[str] = ()) -> None:
    """Idempotent: replaces root handlers with one JSON-lines handler.

    Loggers named in ``background`` write through a :class:`BackgroundStreamHandler` instead (the
    API's access line, ``api.request``).
    """
    formatter = JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for name in background:
        queued = BackgroundStreamHandler(sys.stderr)
        queued.setFormatter(formatter)
        queued.addFilter(_RequestIdFilter())
        logger = logging.getLogger(name)
        logger.handlers[:] = [queued]
        logger.propagate = False
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
