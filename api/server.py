"""Serve the Flask app under gunicorn with the configuration already loaded in this process.

SIGTERM stops the server gracefully within ``http.shutdownGracePeriod``: the listening socket is
closed at once (new connections are refused, so clients and load balancers move on), downloads in
flight go on, requests waiting for a build are answered 503 with ``Retry-After`` by half the period
(``common.shutdown``), and the process exits as soon as nothing is in flight, or when the period ends.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import gunicorn.http.wsgi
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from api.deadline import DeadlineSocket, RequestReadTimeout
from api.metrics import child_exit
from api.middleware import ACCESS_LOGGER
from common.config import Config
from common.logging import LEVELS, configure_logging
from common.readiness import lifecycle
from common.shutdown import PROCESS
from common.version import SERVER_HEADER


def brand_gunicorn() -> None:
    """Make gunicorn's own ``Server`` header ours, so no response carries two.

    gunicorn writes ``Server: gunicorn`` on every response it sends; it also passes the value to
    the app as ``SERVER_SOFTWARE``, which tells the app not to add a second one.
    """
    gunicorn.http.wsgi.SERVER = SERVER_HEADER
    gunicorn.http.wsgi.SERVER_SOFTWARE = SERVER_HEADER


class JSONLogger(Logger):
    """gunicorn's error log through our JSON handler; no access log (the app logs requests)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(self.factory_level, background=(ACCESS_LOGGER,))
        self.error_log.handlers[:] = []
        self.error_log.propagate = True

    factory_level = "info"


class DeadlineConn(TConn):
    """A connection whose request parser reads through a :class:`~api.deadline.DeadlineSocket`."""

    read_seconds = 30.0
    deadline_socket: DeadlineSocket | None = None

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if fresh and isinstance(unreader, SocketUnreader) and self.deadline_socket is None:
            self.deadline_socket = DeadlineSocket(unreader.sock, self.read_seconds)
            unreader.sock = self.deadline_socket


class GracefulThreadWorker(ThreadWorker):
    """gunicorn's threaded worker that, on SIGTERM, starts this process's shutdown clock (waiting
    requests watch it), turns ``/readyz`` to 503 (for requests still answered on kept-alive
    connections) and refuses new connections at once instead of leaving them unanswered in the
    listen backlog until it exits.

    Each request must arrive within ``http.requestReadTimeout`` (``api.deadline``): a client slower
    than that gets 408 and loses its connection, whether it trickles its headers or its body.
    """

    read_seconds = 30.0

    def handle(self, conn: TConn) -> Any:
        if type(conn) is TConn:
            conn.__class__ = DeadlineConn
        if isinstance(conn, DeadlineConn):
            conn.read_seconds = self.read_seconds
            if conn.deadline_socket is not None:
                conn.deadline_socket.restart()  # a kept-alive connection's next request
        return super().handle(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, RequestReadTimeout):
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("request not received within http.requestReadTimeout; closing the connection")
        if req is None:  # still reading the headers: nothing answered yet
            with contextlib.suppress(OSError):
                util.write_error(client, 408, "Request Timeout", "request not received in time")

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Assignments only: safe in a signal handler.
        PROCESS.begin(float(self.cfg.graceful_timeout))
        lifecycle.shutting_down()
        super().handle_exit(sig, frame)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # draining: the arbiter closed its copy of the socket already
            for listener in self.sockets:
                listener.close()


def bind_address(listen: str) -> str:
    """Go's ``:8080`` means every interface; gunicorn wants an explicit host."""
    host, _, port = listen.rpartition(":")
    return f"{host or '0.0.0.0'}:{port}"


class FactoryServer(BaseApplication):
    def __init__(self, config: Config, log_level: str) -> None:
        self.factory_config = config
        self.log_level = log_level
        super().__init__()

    def load_config(self) -> None:
        http = self.factory_config.http
        settings: dict[str, Any] = {
            "bind": [bind_address(http.httpListenAddr)],
            "workers": http.workers,
            "worker_class": GracefulThreadWorker,
            "threads": http.threads,
            # A process with every thread busy accepts only a few more connections (for keep-alive)
            # and leaves the rest to a process with free threads; builds never take the last
            # threads (http.maxWaiters), so what it does queue is quick.
            "worker_connections": http.threads + 32,
            "control_socket_disable": True,  # one per host by default: replicas would fight over it
            "child_exit": child_exit,  # metrics: an exited worker's live gauges stop counting
            "timeout": 0,  # asset requests may wait for builds; liveness is the arbiter's heartbeat
            # Hostile requests: gunicorn answers 414 (line) or 431 (fields) before the app sees them;
            # reading one request is bounded by http.requestReadTimeout (GracefulThreadWorker).
            "limit_request_line": http.maxRequestLine,
            "limit_request_fields": http.maxHeaderFields,
            "limit_request_field_size": http.maxHeaderFieldSize,
            # SIGTERM: downloads in flight finish and waiting requests are answered within this
            "graceful_timeout": max(0, math.ceil(http.shutdownGracePeriod.total_seconds())),
            "accesslog": None,  # the app logs each request as a JSON line itself
            "loglevel": {v: k for k, v in LEVELS.items()}.get(LEVELS[self.log_level], "info").replace(
                "warn", "warning"
            ),
            "proc_name": "image-factory-api",
            "preload_app": True,
            "logger_class": JSONLogger,  # a broken app fails start-up at once, not in a respawn loop
        }
        if http.certFile and http.keyFile:
            settings.update(certfile=http.certFile, keyfile=http.keyFile)
        JSONLogger.factory_level = self.log_level
        GracefulThreadWorker.read_seconds = http.requestReadTimeout.total_seconds()
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from api.app import create_app

        return create_app(self.factory_config)


def serve(config: Config, log_level: str) -> None:
    brand_gunicorn()
    FactoryServer(config, log_level).run()
