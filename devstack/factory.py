"""The factory's own processes (``image-factory api`` / ``worker``) as supervised services.

Shared by ``make run`` (devstack.run) and the integration tests, which run the real console script
against private backing services.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from common.cache.signing import generate_key_pem
from devstack.services import LOOPBACK, S3Server, Service

log = logging.getLogger("devstack")

#: Celery's warm shutdown took 5-6 s in measurements; give it room before SIGKILL.
WORKER_STOP_TIMEOUT = 20.0
DEFAULT_FACTORY_BIN = str(Path(sys.executable).with_name("image-factory"))


def default_signing_key() -> Path:
    """One cache signing key per process (tests and dev stacks that do not bring their own), removed
    when that process exits (not when a child it forked does)."""
    global _SIGNING_KEY
    if _SIGNING_KEY is None or not _SIGNING_KEY.exists():
        folder = Path(tempfile.mkdtemp(prefix="image-factory-keys-"))
        _SIGNING_KEY = folder / "cache-signing.key"
        _SIGNING_KEY.write_bytes(generate_key_pem())
        _SIGNING_KEY.chmod(0o600)
        atexit.register(_remove_key_folder, folder, os.getpid())
    return _SIGNING_KEY


def _remove_key_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


_SIGNING_KEY: Path | None = None


def factory_config(
    redis_url: str,
    registry_host: str,
    *,
    port: int | None = None,
    s3_endpoint: str | None = None,
    s3_enabled: bool = False,
    bucket: str = "image-factory",
    signing_key: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The factory config (upstream camelCase keys plus our ``redis.url``) wired to private services.

    ``overrides`` take dotted keys: ``factory_config(url, host, **{"http.workers": 1})``.
    """
    repo = {"registry": registry_host, "insecure": True}
    config: dict[str, Any] = {
        "redis": {"url": redis_url},
        "containerSignature": {"disabled": True},
        "artifacts": {
            "core": dict(repo),
            "schematic": {**repo, "namespace": "siderolabs/image-factory", "repository": "schematics"},
            "installer": {"internal": {**repo, "namespace": "siderolabs"}},
        },
        "cache": {
            "oci": {**repo, "namespace": "siderolabs/image-factory", "repository": "cache"},
            "signingKeyPath": str(signing_key or default_signing_key()),
        },
        # Off unless asked for: processes on one host cannot all listen on upstream's :2122.
        "metrics": {"addr": ""},
    }
    if port is not None:
        config["http"] = {"httpListenAddr": f"{LOOPBACK}:{port}", "externalURL": f"http://{LOOPBACK}:{port}/"}
    if s3_endpoint is not None:
        config["cache"]["s3"] = {
            "enabled": s3_enabled,
            "bucket": bucket,
            "endpoint": s3_endpoint,
            "region": S3Server.region,
            "insecure": True,
        }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> None:
    header = "# Generated on every start; edits are overwritten.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))


class _FactoryProcess(Service):
    """An ``image-factory --config ... <role>`` subprocess of the CLI the factory ships."""

    role = "api"

    def __init__(
        self,
        factory_bin: str,
        config_path: Path,
        state_dir: Path,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, port, log_path=log_path)
        self.factory_bin = factory_bin
        self.config_path = config_path
        #: Added to (and winning over) the inherited environment: e.g. ``S3Server.credentials_env``.
        self.extra_env: dict[str, str] = dict(env or {})
        self._log_offset = 0
        self._started_at = time.monotonic()

    def prepare(self) -> None:
        # Readiness checks that read the log must ignore earlier runs appended to the same file.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._started_at = time.monotonic()

    def env(self) -> dict[str, str]:
        # S3 credentials come from the environment (boto3's chain, as upstream's): the dev/test S3
        # checks them, so whoever starts the process passes its server's in ``env``.
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def command(self) -> list[str]:
        return [self.factory_bin, "--config", str(self.config_path), "--log-level", "info", self.role]

    def new_log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


class FactoryAPI(_FactoryProcess):
    """The HTTP frontend; ready when /healthz answers 200."""

    name = "api"
    role = "api"
    start_timeout = 60.0
    stop_timeout = 15.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False


class FactoryWorker(_FactoryProcess):
    """One Celery worker. It has no port, so readiness is Celery's "ready." log line.

    If the CLI logs differently we do not block forever: after ``ready_grace`` seconds alive we go on.
    """

    name = "worker"
    role = "worker"
    start_timeout = 60.0
    stop_timeout = WORKER_STOP_TIMEOUT
    ready_grace = 10.0

    def is_ready(self) -> bool:
        if " ready." in self.new_log_text():
            return True
        if time.monotonic() - self._started_at > self.ready_grace:
            log.warning("worker has not logged 'ready.' after %.0fs; assuming it is up", self.ready_grace)
            return True
        return False
