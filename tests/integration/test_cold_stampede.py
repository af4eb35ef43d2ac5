"""Issue 18 under load: a crowd of clients for one cold asset through one API of two gunicorn
processes all get the asset from one build; a plain ``GET`` whose wait runs out gets 503 with
``Retry-After``, never the 202 status document only ``Prefer: respond-async`` asks for."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
CLIENTS = 200


@pytest.fixture(scope="module")
def stampede(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    # Two gunicorn processes of 128 threads, each allowing 20 waiters for builds it does not wait
    # for yet: every client beyond the first few per process joins a build already waited for.
    with factory_stack(
        tmp_path_factory.mktemp("stampede"),
        None,
        registry,
        fixture_release,
        **{"http.workers": 2, "http.threads": 128, "http.maxWaiters": 20},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def idle(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    """No worker: nothing is ever built, so every wait runs out."""
    with factory_stack(
        tmp_path_factory.mktemp("idle"),
        None,
        registry,
        fixture_release,
        workers=0,
        **{"build.waitTimeout": "1s"},
    ) as s:
        yield s


def test_two_hundred_clients_of_one_cold_asset_through_two_processes_get_it_from_one_build(
    stampede: Stack,
) -> None:
    sid = stampede.create_schematic("customization:\n  extraKernelArgs:\n    - test=stampede\n")
    url = f"{stampede.api.url}/image/{sid}/{VERSION}/cmdline-metal-amd64"

    def fetch(_: int) -> requests.Response:
        # a connection of its own per client, as 200 machines would open
        return requests.get(url, timeout=120, headers={"Connection": "close"})

    began = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(fetch, range(CLIENTS)))
    statuses: dict[int, int] = {}
    for r in responses:
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert statuses == {200: CLIENTS}, {r.status_code: r.text for r in responses if r.status_code != 200}
    assert len({hashlib.sha256(r.content).digest() for r in responses}) == 1
    assert responses[0].content.strip()  # a kernel command line
    assert stampede.total_runs() == 1
    assert time.monotonic() - began < 60
    logs = stampede.api.new_log_text()
    assert "MaxConnectionsError" not in logs and "too many requests are waiting" not in logs


def test_a_plain_get_whose_wait_runs_out_gets_503_with_retry_after(idle: Stack) -> None:
    sid = idle.create_schematic("customization:\n  extraKernelArgs:\n    - test=idle\n")
    url = f"{idle.api.url}/image/{sid}/{VERSION}/cmdline-metal-amd64"
    began = time.monotonic()
    plain = requests.get(url, timeout=30)
    assert 1.0 <= time.monotonic() - began < 10  # it waited build.waitTimeout, then gave up
    assert plain.status_code == 503, plain.text
    assert 2 <= int(plain.headers["Retry-After"]) <= 30
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert "still being built" in plain.text and "/builds/" in plain.text
    assert "Location" not in plain.headers and "Preference-Applied" not in plain.headers
    with pytest.raises(ValueError):
        plain.json()  # not the status document: `curl -O` must not save JSON as the image

    asked = requests.get(url, headers={"Prefer": "respond-async"}, timeout=30)
    assert asked.status_code == 202, asked.text
    assert asked.headers["Preference-Applied"] == "respond-async"
    assert asked.headers["Location"].startswith("/builds/")
    assert asked.headers["Content-Type"] == "application/json"
    assert asked.json()["status"] == "queued"
    assert asked.headers["Location"] in plain.text  # the 503 names the same build

    head = requests.head(url, timeout=30)  # HEAD waits like GET, and answers like it
    assert head.status_code == 503 and int(head.headers["Retry-After"]) > 0
