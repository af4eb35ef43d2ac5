"""Serve the Flask app under gunicorn with the configuration already loaded in this process.

SIGTERM stops the server gracefully within ``http.shutdownGracePeriod``: the listening socket is
closed at once (new connections are refused, so clients and load balancers move on), downloads in
flight go on, requests waiting for a build are answered 503 with ``Retry-After`` by half the period
(``common.shutdown``), and the process exits as soon as nothing is in flight, or when the period ends.
"""

from __future__ import annotations

import math
from typing import Any

import gunicorn.http.wsgi
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from api.metrics import child_exit
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
        configure_logging(self.factory_level)
        self.error_log.handlers[:] = []
        self.error_log.propagate = True

    factory_level = "info"


class GracefulThreadWorker(ThreadWorker):
    """gunicorn's threaded worker that, on SIGTERM, starts this process's shutdown clock (waiting
    requests watch it), turns ``/readyz`` to 503 (for requests still answered on kept-alive
    connections) and refuses new connections at once instead of leaving them unanswered in the
    listen backlog until it exits."""

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
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from api.app import create_app

        return create_app(self.factory_config)


def serve(config: Config, log_level: str) -> None:
    brand_gunicorn()
    FactoryServer(config, log_level).run()
