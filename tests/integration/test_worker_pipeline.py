"""``run_build`` in this process against real Redis and registries: the retry and failure paths a
whole stack cannot reach (its API answers 503 itself when the cache registry is down)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.builds.plan import BuildRequest, plan_request
from common.config import load_config
from common.services import build_services
from devstack.factory import factory_config, write_config
from devstack.release.release import Release, factory_overrides
from devstack.services import RedisServer, RegistryServer, free_port
from worker.imager.build import build
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


def test_the_initramfs_is_reused_by_the_next_build_of_the_schematic(
    tmp_path: Path,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ISO first (a user boots it), installer next (the install pulls it): the installer build takes
    the ISO build's initramfs from the cache, and its bytes are those of a build that made its own."""
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/13"
    overrides: dict[str, Any] = {
        **factory_overrides(fixture_release),
        "cache.oci.repository": f"pieces-{uuid.uuid4().hex[:12]}",
        "artifacts.storageDir": str(tmp_path / "store"),
        "build.scratchDir": str(tmp_path / "scratch"),
    }
    write_config(tmp_path / "config.yaml", factory_config(redis_url, registry.host, **overrides))
    services = build_services(load_config([str(tmp_path / "config.yaml")]))
    services.redis.flushdb()
    body = b"customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/dummy-module]\n"
    sid = services.schematics.create(body).id
    iso = BuildRequest(sid, "v1.12.4", "metal-amd64.iso")
    installer = BuildRequest(sid, "v1.12.4", "installer-amd64.tar")
    keys = {}
    for request in (iso, installer):
        _, plan = plan_request(services.schematics, services.artifacts, sid, request.version, request.path)
        keys[request.path] = plan.key
        with caplog.at_level(logging.INFO, logger="worker.imager.build"):
            caplog.clear()
            assert run_build(services, plan.key, request, retries=0).status == "built"
            reused = [r for r in caplog.records if r.getMessage() == "initramfs reused"]
        assert len(reused) == (0 if request is iso else 1), request.path
    _, plan = plan_request(services.schematics, services.artifacts, sid, "v1.12.4", installer.path)
    fresh = build(
        plan,
        sources=services.artifacts,
        external_url=services.config.http.externalURL,
        dest=tmp_path / "fresh",
        scratch_root=tmp_path / "scratch",
    )
    cached = services.cache.get(keys[installer.path])
    assert cached is not None
    assert b"".join(cached.read()) == fresh.path.read_bytes()
    services.redis.flushdb()
