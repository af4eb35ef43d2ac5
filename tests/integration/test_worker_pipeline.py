"""``run_build`` in this process against real Redis and registries: the retry and failure paths a
whole stack cannot reach (its API answers 503 itself when the cache registry is down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.builds.plan import BuildRequest
from common.config import load_config
from common.services import build_services
from devstack.factory import factory_config, write_config
from devstack.release.release import Release, factory_overrides
from devstack.services import RedisServer, RegistryServer, free_port
from worker.pipeline import Retry, backoff, run_build

pytestmark = pytest.mark.integration


def test_transient_errors_are_retried_with_backoff_then_recorded(
    tmp_path: Path, redis_server: RedisServer, registry: RegistryServer, fixture_release: Release
) -> None:
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/14"
    dead_cache = f"127.0.0.1:{free_port()}"  # nothing listens: every cache call fails to connect
    overrides: dict[str, Any] = {
        **factory_overrides(fixture_release),
        "cache.oci.registry": dead_cache,
        "artifacts.storageDir": str(tmp_path / "store"),
    }
    raw = factory_config(redis_url, registry.host, **overrides)
    write_config(tmp_path / "config.yaml", raw)
    services = build_services(load_config([str(tmp_path / "config.yaml")]))
    services.redis.flushdb()
    sid = services.schematics.create(b"{}").id
    request = BuildRequest(sid, "v1.12.4", "cmdline-metal-amd64")
    key = "f" * 64
    with pytest.raises(Retry) as first:
        run_build(services, key, request, retries=1)
    assert first.value.countdown == backoff(1) == 5.0
    record = services.builds.get(key)
    assert record is not None and record.status.value == "queued"
    assert record.stage.startswith("retrying in 5s after: registry") and record.attempts == 1
    assert services.builds.queue_position(key) == 1
    # Out of retries: the failure is recorded for every waiter, as a 503, and the lock is free.
    outcome = run_build(services, key, request, retries=1)
    assert outcome.status == "failed"
    record = services.builds.get(key)
    assert record is not None and (record.status.value, record.error_status) == ("failed", 503)
    assert dead_cache in record.error and record.attempts == 2
    assert services.builds.lock(key).acquire(blocking=False)
    assert services.builds.runs(key) == 0  # the imager never ran
    services.redis.flushdb()
