"""Readiness: the process's own lifecycle decides; dependency checks are only reported."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError, EndpointConnectionError

from common import readiness
from common.config import load_config
from common.config.options import RepositoryOptions, S3Options
from common.errors import UnavailableError
from common.readiness import (
    LIFECYCLE,
    S3_PROBE_KEY,
    Lifecycle,
    Phase,
    check_states,
    dependency_checks,
    registries,
    registry_check,
    s3_check,
    versions_check,
)


def config(**options: object) -> Any:
    environ = {f"IF_{k.upper().replace('.', '_')}": str(v) for k, v in options.items()}
    return load_config([], environ=environ)


def test_lifecycle_starting_serving_shutting_down() -> None:
    life = Lifecycle()
    assert life.phase is Phase.STARTING and not life.ready
    life.serving()
    assert life.ready
    life.shutting_down()
    assert not life.ready and life.phase.value == "shutting down"
    life.serving()  # shutting down is final: a late "serving" cannot put it back
    assert not life.ready


def test_registries_are_distinct_hosts_with_the_keys_that_use_them() -> None:
    found = registries(
        config(
            **{
                "artifacts.core.registry": "src.example",
                "artifacts.core.insecure": "true",
                "artifacts.schematic.registry": "state.example",
                "cache.oci.registry": "state.example",
                "artifacts.installer.internal.registry": "src.example",
                "artifacts.installer.external.registry": "public.example",
            }
        )
    )
    assert {host: use.keys for host, use in found.items()} == {
        "state.example": ["artifacts.schematic", "cache.oci"],
        "src.example": ["artifacts.core", "artifacts.installer.internal"],
    }  # the external installer registry is a redirect target only: never called, never checked
    assert found["src.example"].insecure and not found["state.example"].insecure


def test_dependency_checks_name_what_this_process_calls() -> None:
    client = redis.Redis(port=1)
    plain = dependency_checks(config(), client, lambda: None)
    assert list(plain) == ["redis", "registry:ghcr.io", "talos-versions"]  # upstream's defaults: one host
    with_s3 = dependency_checks(
        config(
            **{
                "cache.s3.enabled": "true",
                "cache.cdn.enabled": "true",
                "cache.cdn.host": "cdn.example",
                "cache.cdn.trimPrefix": "/assets",
                "cache.oci.registry": "c.example",
            }
        ),
        client,
    )
    assert list(with_s3) == ["redis", "registry:ghcr.io", "registry:c.example", "s3"]  # no CDN check


def failing(message: str) -> readiness.Check:
    def check() -> None:
        raise UnavailableError(message)

    return check


def test_check_states_reports_each_check_in_order() -> None:
    def broken() -> None:
        raise RuntimeError("boom\nsecond line")

    states = check_states({"a": lambda: None, "b": failing("b is down"), "c": broken})
    assert states == {
        "a": (True, ""),
        "b": (False, "b is down"),
        "c": (False, "RuntimeError: boom second line"),
    }
    assert check_states({}) == {}


def test_check_states_runs_checks_at_once_and_bounds_a_hanging_one() -> None:
    release = threading.Event()

    def slow() -> None:
        time.sleep(0.3)

    def hangs() -> None:
        release.wait(10)

    began = time.monotonic()
    states = check_states({"one": slow, "two": slow, "three": slow, "hangs": hangs}, timeout=1.0)
    took = time.monotonic() - began
    release.set()
    assert states["one"] == states["two"] == states["three"] == (True, "")
    assert states["hangs"] == (False, "no answer within 1s")
    assert 0.9 <= took < 1.5  # in parallel (not 0.9 s of sleeps plus the hang), and not waiting for it


def test_states_put_the_lifecycle_first(monkeypatch: pytest.MonkeyPatch) -> None:
    life = Lifecycle()
    monkeypatch.setattr(readiness, "lifecycle", life)
    assert readiness.states({"redis": failing("redis is unavailable")}) == {
        LIFECYCLE: (False, "starting"),
        "redis": (False, "redis is unavailable"),
    }
    life.serving()
    assert readiness.states({})[LIFECYCLE] == (True, "")
    life.shutting_down()
    assert readiness.states({})[LIFECYCLE] == (False, "shutting down")


def test_redis_check() -> None:
    class Down:
        def ping(self) -> bool:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    class Up:
        def ping(self) -> bool:
            return True

    readiness.redis_check(Up())()  # type: ignore[arg-type]
    with pytest.raises(UnavailableError, match=r"^redis is unavailable: ConnectionError: Error 111"):
        readiness.redis_check(Down())()  # type: ignore[arg-type]


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "up"), [(200, True), (401, True), (404, True), (500, False), (503, False)]
)
def test_registry_check_counts_any_answer_below_500(
    monkeypatch: pytest.MonkeyPatch, status: int, up: bool
) -> None:
    import common.registry.client as client_module

    seen: list[str] = []

    def get(url: str, timeout: float) -> _Response:
        seen.append(url)
        return _Response(status)

    monkeypatch.setattr(client_module.requests, "get", get)
    check = registry_check(RepositoryOptions(registry="r.example:5000", insecure=True), ["cache.oci"])
    if up:
        check()
    else:
        with pytest.raises(
            UnavailableError, match=rf"^registry r.example:5000 answered {status} \(used for cache.oci\)$"
        ):
            check()
    assert seen == ["http://r.example:5000/v2/"]


def test_registry_check_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import common.registry.client as client_module

    def get(url: str, timeout: float) -> _Response:
        raise client_module.requests.ConnectionError("refused")

    monkeypatch.setattr(client_module.requests, "get", get)
    check = registry_check(RepositoryOptions(registry="r.example"), ["artifacts.core", "cache.oci"])
    with pytest.raises(UnavailableError) as failed:
        check()
    assert failed.value.message == (
        "registry r.example is unavailable: ConnectionError (used for artifacts.core, cache.oci)"
    )


class _S3:
    """The one call the check makes; the answers of a real S3 (SeaweedFS) are in
    ``tests/integration/test_s3_presigned.py``."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.asked: list[tuple[str, str]] = []

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.asked.append((Bucket, Key))
        if self.error is not None:
            raise self.error
        return {"Body": io.BytesIO(b"")}


def client_error(status: int, code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (None, None),
        (client_error(404, "NoSuchKey"), None),  # the expected answer: the probe need not exist
        (client_error(403, "AccessDenied"), None),  # may read and write objects, not list: it answered
        (client_error(404, "NoSuchBucket"), "S3 bucket 'assets' does not exist"),
        (client_error(403, "InvalidAccessKeyId"), "S3 refused the factory's credentials (InvalidAccessKeyId"),
        (client_error(403, "SignatureDoesNotMatch"), "S3 refused the factory's credentials (Signature"),
        (client_error(503, "SlowDown"), "S3 is unavailable: "),
        (
            EndpointConnectionError(endpoint_url="http://s3.example"),
            "S3 is unavailable: EndpointConnectionError",
        ),
    ],
)
def test_s3_check(error: Exception | None, reason: str | None) -> None:
    fake = _S3(error)
    check = s3_check(S3Options(bucket="assets", enabled=True), fake)
    if reason is None:
        check()
    else:
        with pytest.raises(UnavailableError) as failed:
            check()
        assert failed.value.message.startswith(reason)
    assert fake.asked == [("assets", S3_PROBE_KEY)]


def test_versions_check_fails_while_the_list_is_stale() -> None:
    note: list[str | None] = [None]
    check = versions_check(lambda: note[0])
    check()
    note[0] = "talos versions: serving the list from before 2025-01-01T00:00:00Z; refresh failed: x"
    with pytest.raises(UnavailableError, match="serving the list from before"):
        check()
