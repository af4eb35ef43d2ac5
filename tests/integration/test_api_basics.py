"""Issue-2 acceptance through the real console script under gunicorn, against real services."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.services import RedisServer, RegistryServer
from tests.support.factory import FactoryAPI, api_server, factory_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's Redis: no test may stop it (``test_readyz_reports_redis_and_stays_ready`` stops one of
    its own)."""
    with RedisServer(tmp_path_factory.mktemp("module-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer, registry: RegistryServer
) -> Iterator[FactoryAPI]:
    config = factory_config(
        module_redis.url, registry.host, **{"http.allowedOrigins": ["https://ui.example"]}
    )
    with api_server(tmp_path_factory.mktemp("api"), config) as server:
        yield server


def test_healthz_headers(api: FactoryAPI) -> None:
    response = requests.get(f"{api.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.headers["Server"].startswith("Image Factory v")
    uuid.UUID(response.headers["X-Request-ID"])  # generated when not sent
    head = requests.head(f"{api.url}/healthz", timeout=5)
    assert head.status_code == 200 and head.headers["Server"].startswith("Image Factory v")


def test_request_id_is_echoed_and_logged(api: FactoryAPI) -> None:
    rid = f"test-{uuid.uuid4()}"
    response = requests.get(f"{api.url}/healthz", headers={"X-Request-ID": rid}, timeout=5)
    assert response.headers["X-Request-ID"] == rid
    # The access line is written by a thread of its own (common.logging.BackgroundStreamHandler),
    # maybe just after the response went out.
    deadline = time.monotonic() + 10
    while not (found := [line for line in api.log_path.read_text().splitlines() if rid in line]):
        assert time.monotonic() < deadline, f"no access line with {rid}"
        time.sleep(0.05)
    line = found[0]
    for field in ('"method": "GET"', '"path": "/healthz"', '"status": 200', '"duration"', '"msg": "request"'):
        assert field in line


def test_hostile_request_id_is_replaced(api: FactoryAPI) -> None:
    response = requests.get(f"{api.url}/healthz", headers={"X-Request-ID": "a" * 500}, timeout=5)
    assert response.headers["X-Request-ID"] != "a" * 500


def test_unknown_route_and_wrong_method(api: FactoryAPI) -> None:
    missing = requests.get(f"{api.url}/no/such/route", timeout=5)
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert missing.headers["Content-Type"].startswith("text/plain")
    wrong = requests.delete(f"{api.url}/healthz", timeout=5)
    assert (wrong.status_code, wrong.text) == (405, "Method Not Allowed\n")
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


def test_cors_actual_request_and_preflight(api: FactoryAPI) -> None:
    allowed = requests.get(f"{api.url}/healthz", headers={"Origin": "https://ui.example"}, timeout=5)
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert (
        allowed.headers["Access-Control-Expose-Headers"]
        == "Content-Disposition, Content-Length, Content-Type"
    )
    assert "Origin" in allowed.headers["Vary"]
    other = requests.get(f"{api.url}/healthz", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers

    preflight = requests.options(
        f"{api.url}/anything/even/unknown",
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "cache-control",
        },
        timeout=5,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET"
    assert preflight.headers["Access-Control-Allow-Headers"] == "cache-control"
    post = requests.options(
        f"{api.url}/schematics",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert post.status_code == 204 and "Access-Control-Allow-Origin" not in post.headers


def test_readyz_reports_redis_and_stays_ready(tmp_path: Path, registry: RegistryServer) -> None:
    # A Redis and an API of its own: stopping the Redis leaves every other test's services alone,
    # whatever order the tests run in.
    (tmp_path / "api").mkdir()
    with (
        RedisServer(tmp_path / "redis") as own_redis,
        api_server(tmp_path / "api", factory_config(own_redis.url, registry.host)) as api,
    ):
        ready = requests.get(f"{api.url}/readyz", timeout=10)
        assert (ready.status_code, ready.text) == (200, "")  # upstream's answer
        assert requests.get(f"{api.url}/readyz?verbose", timeout=10).text == (
            f"[+]lifecycle ok\n[+]redis ok\n[+]registry:{registry.host} ok\n[+]talos-versions ok\n"
            "readyz check passed\n"
        )
        own_redis.stop()
        # A shared dependency's outage is reported, and leaves the replica in the load balancer.
        assert requests.get(f"{api.url}/readyz", timeout=10).status_code == 200
        verbose = requests.get(f"{api.url}/readyz?verbose", timeout=10)
        assert verbose.status_code == 200
        lines = verbose.text.splitlines()
        assert lines[1].startswith("[-]redis failed: redis is unavailable: ConnectionError")
        assert lines[2] == f"[+]registry:{registry.host} ok" and lines[-1] == "readyz check passed"
        assert requests.get(f"{api.url}/healthz", timeout=5).status_code == 200
