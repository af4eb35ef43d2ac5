"""Start the real console script (gunicorn API, Celery worker) for a test, on a free port."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.factory import DEFAULT_FACTORY_BIN, FactoryAPI, FactoryWorker, factory_config, write_config
from devstack.services import free_port

__all__ = ["FactoryAPI", "FactoryWorker", "api_server", "factory_config", "worker_process"]


def api_server(
    state_dir: Path, config: dict[str, Any], port: int | None = None, env: Mapping[str, str] | None = None
) -> FactoryAPI:
    """An unstarted ``image-factory api`` bound to ``port`` or a free loopback port (use as a context
    manager); ``env`` is added to its environment (S3 credentials: ``S3Server.credentials_env``)."""
    port = port or free_port()
    config = {**config, "http": {**config.get("http", {}), "httpListenAddr": f"127.0.0.1:{port}"}}
    path = state_dir / "config.yaml"
    write_config(path, config)
    return FactoryAPI(DEFAULT_FACTORY_BIN, path, state_dir, port, state_dir / "api.log", env)


def worker_process(
    state_dir: Path, config: dict[str, Any], env: Mapping[str, str] | None = None
) -> FactoryWorker:
    path = state_dir / "config.yaml"
    write_config(path, config)
    return FactoryWorker(DEFAULT_FACTORY_BIN, path, state_dir, 0, state_dir / "worker.log", env)
