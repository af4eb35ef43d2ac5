"""A whole factory for a test: API replicas and Celery workers as real processes on private services.

Each stack gets its own redis-server, cache repository and S3 bucket, so build keys (profile
hashes, identical across tests) never meet a cache entry or build record of another test. A private
server (not a database number on the session's Redis, of which there are only 16, some taken by other
tests) makes a collision impossible however many stacks a run starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from devstack.factory import FactoryAPI, FactoryWorker
from devstack.release.release import Release, factory_overrides
from devstack.services import LOOPBACK, RedisServer, RegistryServer, S3Server, free_port
from tests.support.factory import api_server, factory_config, worker_process


@dataclass
class Stack:
    apis: list[FactoryAPI]
    workers: list[FactoryWorker]
    redis: redis.Redis
    config: dict[str, Any]
    root: Path
    bucket: str | None = None
    redis_server: RedisServer | None = None  # the stack's own redis-server
    metrics: bool = False  # every process with a metrics listener of its own
    metrics_urls: dict[str, str] = field(default_factory=dict)  # "api0", "worker1" → its /metrics URL
    env: dict[str, str] = field(default_factory=dict)  # added to every process's environment (S3 keys)

    @property
    def api(self) -> FactoryAPI:
        return self.apis[0]

    def create_schematic(self, body: str) -> str:
        response = requests.post(f"{self.api.url}/schematics", data=body.encode(), timeout=30)
        assert response.status_code == 201, response.text
        schematic_id: str = response.json()["id"]
        return schematic_id

    def runs(self, key: str) -> int:
        """Imager runs for ``key``, as the workers counted them."""
        value = self.redis.get(f"if:build:runs:{key}")
        return int(value) if value else 0

    def total_runs(self) -> int:
        return sum(int(self.redis.get(k) or 0) for k in self.redis.scan_iter("if:build:runs:*"))

    def record(self, key: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = self.redis.hgetall(f"if:build:rec:{key}")  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    def process_config(self, name: str) -> dict[str, Any]:
        """The stack's config for process ``name``; with ``metrics``, on a metrics port of its own."""
        if not self.metrics:
            return self.config
        port = free_port()
        self.metrics_urls[name] = f"http://{LOOPBACK}:{port}/metrics"
        return {**self.config, "metrics": {"addr": f"{LOOPBACK}:{port}"}}

    def add_worker(self) -> FactoryWorker:
        name = f"worker{len(self.workers)}"
        state = self.root / name
        state.mkdir(parents=True, exist_ok=True)
        worker = worker_process(state, self.process_config(name), self.env)
        worker.start()
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: FactoryWorker) -> None:
        """SIGKILL the worker and everything it started (pool processes, imager tools)."""
        assert worker.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)


def _stop_all(workers: list[FactoryWorker]) -> None:
    for worker in workers:
        worker.stop()


@contextlib.contextmanager
def factory_stack(
    root: Path,
    redis_server: RedisServer | None,
    registry: RegistryServer,
    release: Release,
    *,
    apis: int = 1,
    workers: int = 1,
    s3: S3Server | None = None,
    pxe_host: str | None = None,
    metrics: bool = False,
    s3_credentials: tuple[str, str] | None = None,
    **overrides: Any,
) -> Iterator[Stack]:
    """``pxe_host``: set ``http.externalPXEURL`` to ``http://<pxe_host>:<first API's port>/`` (e.g.
    ``10.0.2.2``, the host as a QEMU guest sees it). ``metrics``: every API and worker serves
    ``/metrics`` on a port of its own (``Stack.metrics_urls``); by default none does.
    ``s3_credentials``: ``(access key, secret key)`` the processes get instead of ``s3``'s own.

    ``redis_server`` (the session's) is not used: the stack starts a redis-server of its own under
    ``root``, stopped with the stack. The parameter stays so that callers keep their signature."""
    del redis_server
    ports = [free_port() for _ in range(apis)]
    if pxe_host is not None:
        overrides = {"http.externalPXEURL": f"http://{pxe_host}:{ports[0]}/", **overrides}
    with contextlib.ExitStack() as stop:
        own_redis = stop.enter_context(RedisServer(root / "redis"))  # stopped last, after APIs and workers
        client = stop.enter_context(redis.Redis.from_url(own_redis.url))
        assert client.dbsize() == 0, "a fresh redis-server must be empty"
        bucket = None
        if s3 is not None:
            bucket = f"assets-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(bucket)
        config = factory_config(
            own_redis.url,
            registry.host,
            s3_endpoint=s3.endpoint if s3 is not None else None,
            s3_enabled=s3 is not None,
            bucket=bucket or "image-factory",
            **factory_overrides(release),
            **{
                "cache.oci.repository": f"cache-{uuid.uuid4().hex[:12]}",
                "artifacts.storageDir": str(root / "artifacts"),
                "build.scratchDir": str(root / "scratch"),
                "http.workers": 1,
                **overrides,
            },
        )
        env: dict[str, str] = {}
        if s3 is not None:
            env = s3.credentials_env
            if s3_credentials is not None:
                env = {"AWS_ACCESS_KEY_ID": s3_credentials[0], "AWS_SECRET_ACCESS_KEY": s3_credentials[1]}
        stack = Stack([], [], client, config, root, bucket, own_redis, metrics, env=env)
        for i in range(apis):
            state = root / f"api{i}"
            state.mkdir(parents=True, exist_ok=True)
            api = api_server(state, stack.process_config(f"api{i}"), ports[i], stack.env)
            stack.apis.append(stop.enter_context(api))
        for _ in range(workers):
            stack.add_worker()
        stop.callback(_stop_all, stack.workers)
        yield stack
