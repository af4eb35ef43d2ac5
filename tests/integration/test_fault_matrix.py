"""Issue 18's fault matrix: each shared dependency stopped, then restarted, under a running factory.

For Redis, the source registry (schematics, the Talos release), the cache registry, S3, a Celery
worker and an API replica, during cached downloads, cold builds, schematic creation and ``/v2``
installer pulls: cached assets stay served while their bytes are reachable anywhere; what needs
the missing dependency answers 503 with ``Retry-After`` (never a 500) and succeeds once it is back,
without restarting the factory; a Redis restarted empty loses no build a client waits for; nothing
unsigned is served and nothing is published twice (``build published`` log lines of the workers,
which outlive Redis' run counters). The README's "Faults" table is this file's summary.

What other files already prove is not repeated here: every dependency stopped at once without
restarts (``test_readiness.py``), a worker SIGKILLed mid-build (``test_build_pipeline.py``), a
worker or API SIGTERMed (``test_graceful_shutdown.py``), no worker at all (``test_cold_stampede.py``).

One stack per dependency (module scope where two tests share it). The services are stopped and
started again on the same port with ``devstack.services.Service.stop``/``start``.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.factory import FactoryAPI
from devstack.release.release import Release
from devstack.services import RegistryServer, S3Server, wait_until
from tests.support.oci_tools import MANIFEST_ACCEPT
from tests.support.stack import Stack, factory_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # several stacks, each started and faulted

VERSION = "v1.12.4"
BUILD_WAIT = 300
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IPXE = {"User-Agent": "iPXE/1.21.1"}  # never redirected: the factory streams the bytes itself
RECHECK = 5.0  # cache.recheckInterval of the S3 stack: how long a dead S3 may still get clients
SLOW = "  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"  # a longer build


class Answers:
    """Every status any API answered in a test, so that it can say none was a 500."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def get(self, api: FactoryAPI, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", BUILD_WAIT)
        kwargs.setdefault("allow_redirects", False)
        response = requests.get(f"{api.url}{path}", **kwargs)
        with self._lock:
            self.seen.append((path, response.status_code))
        return response

    def post(self, api: FactoryAPI, path: str, body: bytes) -> requests.Response:
        response = requests.post(f"{api.url}{path}", data=body, timeout=60)
        with self._lock:
            self.seen.append((path, response.status_code))
        return response

    def background(
        self, api: FactoryAPI, path: str, **kwargs: Any
    ) -> tuple[threading.Thread, dict[str, Any]]:
        result: dict[str, Any] = {}

        def fetch() -> None:
            result["response"] = self.get(api, path, **kwargs)

        thread = threading.Thread(target=fetch)
        thread.start()
        return thread, result

    def no_500(self) -> None:
        assert not [seen for seen in self.seen if seen[1] >= 500 and seen[1] != 503], self.seen


def unavailable(response: requests.Response, *words: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) > 0
    for word in words:
        assert word in response.text, response.text


def served(response: requests.Response, expected: bytes) -> None:
    """The asset's bytes, streamed (200) or behind a redirect (302) to where they are."""
    if response.status_code == 302:
        response = requests.get(response.headers["Location"], timeout=60)
    assert (response.status_code, response.content) == (200, expected), response.text[:300]


def image(sid: str, path: str) -> str:
    return f"/image/{sid}/{VERSION}/{path}"


def iso_ok(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert len(response.content) == int(response.headers["Content-Length"])
    assert response.content[32769:32774] == b"CD001"  # an ISO 9660 volume


def publications(stack: Stack, key: str) -> int:
    """How many times a worker published ``key`` to the cache, by the workers' logs."""
    return sum(
        line.count(key)
        for worker in stack.workers
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if "build published" in line
    )


def schematic(stack: Stack, tag: str, extra: str = "") -> str:
    return stack.create_schematic(f"customization:\n  extraKernelArgs:\n    - test=fault-{tag}\n{extra}")


def key_of(stack: Stack, sid: str, path: str) -> str:
    """The build key of ``path`` once a worker runs its imager."""

    def find() -> str | None:
        for name in stack.redis.scan_iter("if:build:rec:*"):
            key = name.decode().rsplit(":", 1)[1]
            record = stack.record(key)
            request = record.get("request", "")
            if f'"{sid}"' in request and f'"{path}"' in request and record.get("stage") == "building":
                return key
        return None

    return wait_until(find, BUILD_WAIT, f"the build of {path} to start", interval=0.05)


def retried(
    answers: Answers, api: FactoryAPI, path: str, within: float = BUILD_WAIT, **kwargs: Any
) -> requests.Response:
    """What a client that honours ``Retry-After`` finally gets (a 503 is only ever retried)."""
    deadline = time.monotonic() + within
    while True:
        response = answers.get(api, path, **kwargs)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        unavailable(response)
        time.sleep(min(5, int(response.headers["Retry-After"])))


def pull(answers: Answers, api: FactoryAPI, sid: str) -> requests.Response:
    """A manifest request for ``metal-installer/<sid>:<version>``: the index, as a puller asks for it."""
    return answers.get(
        api,
        f"/v2/metal-installer/{sid}/manifests/{VERSION}",
        headers={"Accept": f"{OCI_INDEX}, {MANIFEST_ACCEPT}"},
    )


def index_ok(response: requests.Response, answers: Answers, api: FactoryAPI, sid: str) -> None:
    """An index, and each of its manifests reachable through the factory by digest."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    for entry in response.json()["manifests"]:
        by_digest = answers.get(
            api,
            f"/v2/metal-installer/{sid}/manifests/{entry['digest']}",
            headers={"Accept": entry["mediaType"]},
        )
        assert by_digest.status_code == 200, by_digest.text


# --------------------------------------------------------------------------------------------------
# Redis


@pytest.fixture
def two_by_two(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    """Two API replicas, two workers, one stack per test. Not shared: after a Redis restart a Celery
    worker may stop consuming without a word (celery/celery#9054, #10205; README "Faults"), which
    must not decide whether the processes' test has a worker left to build."""
    root = tmp_path_factory.mktemp("fault-two-by-two")
    with factory_stack(root, None, registry, fixture_release, apis=2, workers=2) as s:
        yield s


def test_redis_restarted_empty_loses_no_build_a_client_waits_for(two_by_two: Stack) -> None:
    s, answers = two_by_two, Answers()
    assert s.redis_server is not None
    api0, api1 = s.apis
    cached = schematic(s, "redis-cached")
    kernel_args = answers.get(api0, image(cached, "cmdline-metal-amd64"), headers=IPXE).content
    assert b"test=fault-redis-cached" in kernel_args
    index_ok(pull(answers, api0, cached), answers, api0, cached)
    slow = schematic(s, "redis-slow", SLOW)
    waiting = [answers.background(api, image(slow, "metal-amd64.iso")) for api in (api0, api1)]
    key = key_of(s, slow, "metal-amd64.iso")

    # Down: cached assets are served, new builds are 503, schematics are still created.
    s.redis_server.stop()
    for api in (api0, api1):
        served(answers.get(api, image(cached, "cmdline-metal-amd64")), kernel_args)
    created = answers.post(
        api1, "/schematics", b"customization:\n  extraKernelArgs:\n    - test=fault-redis-down\n"
    )
    assert created.status_code == 201, created.text  # schematics live in the registry
    new = created.json()["id"]
    unavailable(answers.get(api0, image(new, "cmdline-metal-amd64")), "redis")
    index_ok(pull(answers, api1, cached), answers, api1, cached)
    unavailable(pull(answers, api0, new), "redis")
    assert all(thread.is_alive() for thread, _ in waiting), "the waiting clients must wait on"

    # Back, empty: the build the clients wait for is queued again (or kept by its worker), finished
    # once, and both get it; new builds work without restarting anything.
    s.redis_server.start()
    for thread, _ in waiting:
        thread.join(BUILD_WAIT)
    first, second = (result["response"] for _, result in waiting)
    iso_ok(first)
    assert second.content == first.content
    assert publications(s, key) == 1
    after = answers.get(api1, image(new, "cmdline-metal-amd64"), headers=IPXE)
    assert after.status_code == 200 and b"test=fault-redis-down" in after.content
    answers.no_500()


# --------------------------------------------------------------------------------------------------
# The source registry (schematics and the Talos release) and the cache registry


@pytest.fixture
def private_source(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> Iterator[tuple[RegistryServer, Release]]:
    """A registry of its own holding a copy of the session's release, so that stopping it leaves
    every other test's source alone (the release's signatures name no registry host)."""
    own = RegistryServer(tmp_path / "source")
    shutil.copytree(registry.data_dir, own.data_dir)
    with own:
        yield own, dataclasses.replace(fixture_release, registry=own.host)


def test_the_source_registry_stopped_then_restarted(
    tmp_path: Path, private_source: tuple[RegistryServer, Release]
) -> None:
    source, release = private_source
    with (
        RegistryServer(tmp_path / "cache-registry") as cache,
        factory_stack(
            tmp_path / "stack",
            None,
            source,
            release,
            apis=2,
            workers=1,
            **{
                "cache.oci.registry": cache.host,
                "artifacts.installer.internal.registry": cache.host,
                "build.waitTimeout": "15s",
                "build.registryWaitTimeout": "15s",
            },
        ) as s,
    ):
        answers = Answers()
        builder, api = s.apis  # the second replica has seen nothing before the outage
        sid = schematic(s, "source-cached")
        kernel_args = answers.get(builder, image(sid, "cmdline-metal-amd64"), headers=IPXE).content
        assert b"test=fault-source-cached" in kernel_args
        index_ok(pull(answers, builder, sid), answers, builder, sid)
        cold = schematic(s, "source-cold", SLOW)

        source.stop()
        served(answers.get(api, image(sid, "cmdline-metal-amd64")), kernel_args)
        index_ok(pull(answers, api, sid), answers, api, sid)
        created = answers.post(
            api, "/schematics", b"customization:\n  extraKernelArgs:\n    - test=fault-source-new\n"
        )
        unavailable(created, source.host)
        unavailable(answers.get(api, image(cold, "metal-amd64.iso")))
        unavailable(pull(answers, api, cold))

        source.start()
        created = answers.post(
            api, "/schematics", b"customization:\n  extraKernelArgs:\n    - test=fault-source-new\n"
        )
        assert created.status_code == 201, created.text
        iso_ok(retried(answers, api, image(cold, "metal-amd64.iso")))
        index_ok(
            retried(
                answers, api, f"/v2/metal-installer/{cold}/manifests/{VERSION}", headers={"Accept": OCI_INDEX}
            ),
            answers,
            api,
            cold,
        )
        answers.no_500()


def test_the_cache_registry_stopped_during_a_build_then_restarted(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    with (
        RegistryServer(tmp_path / "cache-registry") as cache,
        factory_stack(
            tmp_path / "stack",
            None,
            registry,
            fixture_release,
            apis=2,
            workers=2,
            **{"cache.oci.registry": cache.host, "build.registryWaitTimeout": "15s"},
        ) as s,
    ):
        answers = Answers()
        builder, api = s.apis
        sid = schematic(s, "cache-cached")
        kernel_args = answers.get(builder, image(sid, "cmdline-metal-amd64"), headers=IPXE).content
        assert b"test=fault-cache-cached" in kernel_args
        index_ok(pull(answers, builder, sid), answers, builder, sid)
        slow = schematic(s, "cache-slow", SLOW)
        getter, result = answers.background(api, image(slow, "metal-amd64.iso"))
        key = key_of(s, slow, "metal-amd64.iso")
        cold = schematic(s, "cache-cold")

        # Down while the build runs: its publication fails, and is retried (not failed for good).
        cache.stop()
        unavailable(answers.get(api, image(sid, "cmdline-metal-amd64")), cache.host)  # its bytes are nowhere
        unavailable(answers.get(api, image(cold, "cmdline-metal-amd64")), cache.host)
        created = answers.post(
            api, "/schematics", b"customization:\n  extraKernelArgs:\n    - test=fault-cache-new\n"
        )
        assert created.status_code == 201, created.text  # schematics live in the source registry
        unavailable(pull(answers, api, cold))
        index_ok(pull(answers, api, sid), answers, api, sid)  # the images are in the installer registry
        wait_until(
            lambda: "retrying" in s.record(key).get("stage", ""),
            BUILD_WAIT,
            "the publication to fail",
            interval=0.2,
        )
        assert getter.is_alive(), "the waiting client must wait on"

        cache.start()
        getter.join(BUILD_WAIT)
        iso_ok(result["response"])
        assert publications(s, key) == 1
        served(answers.get(api, image(sid, "cmdline-metal-amd64")), kernel_args)
        index_ok(pull(answers, api, sid), answers, api, sid)
        after = answers.get(api, image(cold, "cmdline-metal-amd64"), headers=IPXE)
        assert after.status_code == 200 and b"test=fault-cache-cold" in after.content
        answers.no_500()


# --------------------------------------------------------------------------------------------------
# S3


def test_s3_stopped_during_a_build_then_restarted(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    with (
        S3Server(tmp_path / "s3") as s3,
        factory_stack(
            tmp_path / "stack",
            None,
            registry,
            fixture_release,
            apis=2,
            workers=2,
            s3=s3,
            **{"cache.recheckInterval": f"{RECHECK:.0f}s"},
        ) as s,
    ):
        answers = Answers()
        builder, api = s.apis
        sid = schematic(s, "s3-cached")
        redirect = answers.get(builder, image(sid, "cmdline-metal-amd64"))
        assert redirect.status_code == 302, redirect.text
        kernel_args = requests.get(redirect.headers["Location"], timeout=60).content
        assert b"test=fault-s3-cached" in kernel_args
        index_ok(pull(answers, builder, sid), answers, builder, sid)
        slow = schematic(s, "s3-slow", SLOW)
        getter, result = answers.background(api, image(slow, "metal-amd64.iso"), allow_redirects=True)
        key = key_of(s, slow, "metal-amd64.iso")

        s3.stop()
        stopped = time.monotonic()
        # A replica that has not verified the asset streams it from the registry's signed copy.
        fresh = answers.get(api, image(sid, "cmdline-metal-amd64"))
        assert (fresh.status_code, fresh.content) == (200, kernel_args)
        assert "Location" not in fresh.headers
        # The replica that redirected to S3 before stops doing so within cache.recheckInterval.
        wait_until(
            lambda: answers.get(builder, image(sid, "cmdline-metal-amd64")).status_code == 200,
            RECHECK + 10,
            "redirects to the stopped S3 to end",
            interval=1.0,
        )
        redirected_for = time.monotonic() - stopped
        created = answers.post(
            api, "/schematics", b"customization:\n  extraKernelArgs:\n    - test=fault-s3-new\n"
        )
        assert created.status_code == 201, created.text
        index_ok(pull(answers, api, sid), answers, api, sid)
        wait_until(
            lambda: "retrying" in s.record(key).get("stage", ""),
            BUILD_WAIT,
            "the upload to fail",
            interval=0.2,
        )
        assert getter.is_alive(), "the waiting client must wait on"

        s3.start()
        s3.create_bucket(s.bucket or "")  # a no-op for an S3 that kept its data
        getter.join(BUILD_WAIT)
        iso_ok(result["response"])
        assert publications(s, key) == 1
        again = answers.get(api, image(slow, "metal-amd64.iso"))
        assert again.status_code == 302  # uploaded once S3 was back: redirected again
        assert requests.get(again.headers["Location"], timeout=60).content == result["response"].content
        served(answers.get(api, image(sid, "cmdline-metal-amd64")), kernel_args)
        answers.no_500()
    assert redirected_for <= RECHECK + 3, redirected_for


# --------------------------------------------------------------------------------------------------
# The factory's own processes: an API replica, a Celery worker


def test_an_api_replica_and_a_worker_stopped_then_restarted(two_by_two: Stack) -> None:
    s, answers = two_by_two, Answers()
    api0, api1 = s.apis
    sid = schematic(s, "processes-cached")
    kernel_args = answers.get(api0, image(sid, "cmdline-metal-amd64"), headers=IPXE).content
    assert b"test=fault-processes-cached" in kernel_args
    cold = schematic(s, "processes-cold")

    # An API replica stopped: the other one serves everything; restarted on its port, it serves too.
    api0.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api0.url}/healthz", timeout=5)  # refused: a load balancer sends clients on
    served(answers.get(api1, image(sid, "cmdline-metal-amd64")), kernel_args)
    assert answers.get(api1, image(cold, "cmdline-metal-amd64"), headers=IPXE).status_code == 200
    api0.start()
    served(answers.get(api0, image(sid, "cmdline-metal-amd64")), kernel_args)
    index_ok(pull(answers, api0, sid), answers, api0, sid)

    # One worker stopped: the other builds. Both stopped: the build stays queued (a plain GET would
    # get 503 with Retry-After after build.waitTimeout: test_cold_stampede.py); a worker back builds
    # it, once, and the retry gets it.
    s.workers[0].stop()
    other = schematic(s, "processes-one-worker")
    assert answers.get(api1, image(other, "cmdline-metal-amd64"), headers=IPXE).status_code == 200
    s.workers[1].stop()
    none = schematic(s, "processes-no-worker")
    waited = answers.get(
        api0, image(none, "cmdline-metal-amd64"), headers={**IPXE, "Prefer": "respond-async"}
    )
    assert waited.status_code == 202, waited.text
    key = waited.headers["Location"].rsplit("/", 1)[1]
    s.workers[0].start()
    after = retried(answers, api1, image(none, "cmdline-metal-amd64"), headers=IPXE)
    assert after.status_code == 200 and b"test=fault-processes-no-worker" in after.content
    assert s.runs(key) == 1 and publications(s, key) == 1
    s.workers[1].start()
    answers.no_500()
