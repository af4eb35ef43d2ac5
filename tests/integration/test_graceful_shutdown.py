"""Issue 17's graceful shutdown through real processes: SIGTERM to the gunicorn API during a 1 GiB
download and a build wait, and SIGTERM to a Celery worker during a build, with a grace period
longer than what is left of the build (it finishes) and shorter (it is handed back and redone by
another worker)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from common.cache.base import AssetInfo
from common.cache.oci import OCICache
from common.cache.signing import FileCacheSigner
from common.config.options import RepositoryOptions
from common.cosign.registry import signature_tag
from common.registry.client import RegistryClient
from devstack.release.release import Release
from devstack.services import RegistryServer, free_port
from tests.support.factory import FactoryWorker, worker_process
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
MiB = 1 << 20
BIG = 1024 * MiB
BUILD_WAIT = 300


def cache_repo(config: dict[str, Any]) -> RepositoryOptions:
    oci = config["cache"]["oci"]
    return RepositoryOptions(oci["registry"], oci["namespace"], oci["repository"], True)


def big_file(path: Path, size: int) -> str:
    """``size`` bytes no compressor or dedup shortcut makes cheap; returns their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as out:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def key_for(stack: Stack, sid: str, path: str) -> str:
    """The build key of an asset, from the 202 of an asynchronous request (no worker builds it)."""
    r = requests.get(
        f"{stack.api.url}/image/{sid}/{VERSION}/{path}", headers={"Prefer": "respond-async"}, timeout=30
    )
    assert r.status_code == 202, r.text
    return str(r.headers["Location"]).rsplit("/", 1)[1]


# --------------------------------------------------------------------------------------------------
# The API


def test_sigterm_to_the_api_finishes_a_1gib_download_and_answers_the_waiting_client(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    grace = 30.0
    with (
        RegistryServer(tmp_path / "cache-registry") as cache_registry,  # its 1 GiB goes with it
        factory_stack(
            tmp_path / "stack",
            None,
            registry,
            fixture_release,
            workers=0,  # nothing is built: the waiting client waits until it is answered
            **{
                "cache.oci.registry": cache_registry.host,
                "http.shutdownGracePeriod": f"{grace:.0f}s",
                # As deployed: the metrics listener in the gunicorn master must not hold the exit up.
                "metrics.addr": f"127.0.0.1:{free_port()}",
            },
        ) as stack,
    ):
        sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=graceful-api\n")
        key = key_for(stack, sid, "metal-amd64.iso")
        source = tmp_path / "big.iso"
        expected = big_file(source, BIG)
        signer = FileCacheSigner.from_path(stack.config["cache"]["signingKeyPath"])
        OCICache(RegistryClient(cache_repo(stack.config)), signer).put(
            key, source, AssetInfo("metal-amd64.iso", "application/octet-stream")
        )
        source.unlink()

        api = stack.api
        assert api.proc is not None
        download: dict[str, Any] = {}
        waited: dict[str, Any] = {}
        started = threading.Event()

        def fetch() -> None:
            """A client reading at about 64 MiB/s: some 16 s for the whole, longer than gunicorn's
            former fixed 10 s graceful timeout after the SIGTERM below."""
            digest, size, begun = hashlib.sha256(), 0, time.monotonic()
            try:
                with requests.get(
                    f"{api.url}/image/{sid}/{VERSION}/metal-amd64.iso", stream=True, timeout=60
                ) as r:
                    download["status"] = r.status_code
                    download["length"] = int(r.headers["Content-Length"])
                    for chunk in r.iter_content(MiB):
                        digest.update(chunk)
                        size += len(chunk)
                        if size >= 64 * MiB:
                            started.set()
                        ahead = size / (64 * MiB) - (time.monotonic() - begun)
                        if ahead > 0:
                            time.sleep(ahead)
            except requests.RequestException as exc:  # cut: reported below with what arrived
                download["error"] = repr(exc)
            download.update(sha256=digest.hexdigest(), size=size, done=time.monotonic())

        def wait_for_build() -> None:
            r = requests.get(f"{api.url}/image/{sid}/{VERSION}/metal-amd64.raw.xz", timeout=120)
            waited.update(response=r, done=time.monotonic())

        threads = [threading.Thread(target=fetch), threading.Thread(target=wait_for_build)]
        for t in threads:
            t.start()
        assert started.wait(60), "the download did not start"
        deadline = time.monotonic() + 30
        while not any(
            json.loads(stack.record(k.decode().rsplit(":", 1)[1]).get("request") or "{}").get("path")
            == "metal-amd64.raw.xz"
            for k in stack.redis.scan_iter("if:build:rec:*")
        ):
            assert time.monotonic() < deadline, "the waiting request never queued its build"
            time.sleep(0.1)
        time.sleep(0.5)  # the waiting request is in its wait now

        stopped = time.monotonic()
        os.kill(api.proc.pid, signal.SIGTERM)
        time.sleep(1.5)  # the worker's event loop notices within a second
        try:
            late = requests.get(f"{api.url}/healthz", timeout=5)
        except requests.ConnectionError:
            pass  # refused: what a load balancer or client retries elsewhere at once
        else:
            assert late.status_code == 503, late.status_code

        for t in threads:
            t.join(grace + 15)
        exit_code = api.proc.wait(timeout=15)
        exited = time.monotonic()

    assert download["status"] == 200 and download["length"] == BIG
    assert "error" not in download, f"the download was cut after {download['size']} bytes: {download}"
    assert download["size"] == BIG and download["sha256"] == expected, "the download was corrupted"
    assert download["done"] - stopped < grace, "the download outlived the grace period"
    assert download["done"] - stopped > 10, "the download was too quick to prove anything"
    response = waited["response"]
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0, response.text
    assert "shutting down" in response.text
    # Answered by half the grace period (the waiter polls every 2 s), not cut when the process went.
    assert grace / 2 - 1 <= waited["done"] - stopped <= grace / 2 + 4
    # The process left once nothing was in flight, not at the end of the grace period.
    assert exit_code == 0
    assert exited - max(download["done"], waited["done"]) < 5


# --------------------------------------------------------------------------------------------------
# The workers


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    """An API and no worker: each test starts workers with the grace period it needs."""
    with factory_stack(
        tmp_path_factory.mktemp("graceful-workers"), None, registry, fixture_release, workers=0
    ) as s:
        yield s


def start_worker(stack: Stack, grace: str) -> FactoryWorker:
    config = {**stack.config, "build": {**stack.config.get("build", {}), "shutdownGracePeriod": grace}}
    state = stack.root / f"worker{len(list(stack.root.glob('worker*')))}"
    state.mkdir(parents=True)
    worker = worker_process(state, config)
    worker.start()
    stack.workers.append(worker)
    return worker


def building(stack: Stack, sid: str, path: str) -> str:
    """The key of the build of ``path`` for ``sid`` once a worker runs its imager."""
    deadline = time.monotonic() + BUILD_WAIT
    while True:
        for name in stack.redis.scan_iter("if:build:rec:*"):
            key = name.decode().rsplit(":", 1)[1]
            record = stack.record(key)
            request = json.loads(record.get("request") or "{}")
            if (request.get("schematic"), request.get("path")) == (sid, path) and record.get(
                "stage"
            ) == "building":
                return key
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)


def request_in_background(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def fetch() -> None:
        result["response"] = requests.get(url, timeout=BUILD_WAIT)

    thread = threading.Thread(target=fetch)
    thread.start()
    return thread, result


def watch_cache(stack: Stack, key: str, stop: threading.Event) -> tuple[threading.Thread, list[bool]]:
    """Records, until ``stop``, whether the cache tag is visible without its signature (partial)."""
    client = RegistryClient(cache_repo(stack.config))
    partial: list[bool] = []

    def watch() -> None:
        while not stop.is_set():
            digest = client.resolve(key)
            partial.append(digest is not None and client.get_manifest(signature_tag(digest)) is None)
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, partial


def iso_ok(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert len(response.content) == int(response.headers["Content-Length"])
    assert response.content[32769:32774] == b"CD001"  # an ISO 9660 volume


def test_sigterm_to_a_worker_lets_its_build_finish_within_the_grace_period(stack: Stack) -> None:
    worker = start_worker(stack, "2m")
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=graceful-finish\n")
    path = "metal-amd64.iso"
    getter, result = request_in_background(f"{stack.api.url}/image/{sid}/{VERSION}/{path}")
    key = building(stack, sid, path)
    first = stack.record(key)
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGTERM)  # Kubernetes signals the container's first process only
    getter.join(BUILD_WAIT)
    iso_ok(result["response"])
    final = stack.record(key)
    assert final["status"] == "succeeded" and final["worker"] == first["worker"]
    assert stack.runs(key) == 1
    assert worker.proc.wait(timeout=30) == 0  # and then the worker went
    stack.workers.remove(worker)


def test_sigterm_to_a_worker_hands_a_longer_build_back_and_another_worker_redoes_it(
    stack: Stack,
) -> None:
    worker = start_worker(stack, "1s")
    sid = stack.create_schematic(  # an extension makes the build longer than the grace period
        "customization:\n  extraKernelArgs:\n    - test=graceful-hand-back\n"
        "  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"
    )
    path = "metal-amd64.iso"
    getter, result = request_in_background(f"{stack.api.url}/image/{sid}/{VERSION}/{path}")
    key = building(stack, sid, path)
    first = stack.record(key)
    stop = threading.Event()
    watcher, partial = watch_cache(stack, key, stop)
    assert worker.proc is not None
    stopped = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    assert time.monotonic() - stopped < 15, "the grace period was 1 s: it must hand back and go"
    stack.workers.remove(worker)
    # Handed back, not lost: queued again, not finished, its scratch folder removed.
    handed_back = stack.record(key)
    assert handed_back["status"] == "queued", handed_back
    assert "its worker stopped" in handed_back["stage"]
    assert stack.redis.zscore("if:build:queue", key) is not None
    pid = first["worker"].rsplit(":", 1)[1]
    assert not [p for p in (stack.root / "scratch").glob(f"build-{pid}-*")]
    assert getter.is_alive(), "the waiting client must still be waiting"

    other = start_worker(stack, "1s")
    getter.join(BUILD_WAIT)
    stop.set()
    watcher.join()
    iso_ok(result["response"])
    final = stack.record(key)
    assert final["status"] == "succeeded" and final["worker"] != first["worker"]
    assert final["attempts"] == "1", "a hand-back is not a failed attempt"
    assert stack.runs(key) == 2
    assert partial and not any(partial), "an entry was visible before it was complete"
    again = requests.get(f"{stack.api.url}/image/{sid}/{VERSION}/{path}", timeout=60)
    assert hashlib.sha256(again.content).digest() == hashlib.sha256(result["response"].content).digest()
    other.stop()
    stack.workers.remove(other)
