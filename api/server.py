"""Serve the Flask app under gunicorn with the configuration already loaded in this process."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from common.config import Config
from common.logging import LEVELS


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
            "worker_class": "gthread",
            "threads": http.threads,
            "timeout": 0,  # asset requests may wait for builds; liveness is the arbiter's heartbeat
            "graceful_timeout": 10,
            "accesslog": None,  # the app logs each request as a JSON line itself
            "loglevel": {v: k for k, v in LEVELS.items()}.get(LEVELS[self.log_level], "info").replace(
                "warn", "warning"
            ),
            "proc_name": "image-factory-api",
            "preload_app": True,  # a broken app fails start-up at once, not in a respawn loop
        }
        if http.certFile and http.keyFile:
            settings.update(certfile=http.certFile, keyfile=http.keyFile)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from api.app import create_app

        return create_app(self.factory_config)


def serve(config: Config, log_level: str) -> None:
    FactoryServer(config, log_level).run()
