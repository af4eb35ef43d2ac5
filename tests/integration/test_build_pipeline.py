"""Issue 7's acceptance through real processes: two gunicorn APIs and Celery workers on a private
Redis, the registry and the fixture release. Builds are counted by the workers (``if:build:runs:*``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from common.config.options import RepositoryOptions
from common.cosign.registry import (
    SignatureLayer,
    push_legacy_signatures,
    signature_tag,
    simple_signing_payload,
)
from common.registry.client import RegistryClient
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
EXTENSIONS = "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"
BUILD_WAIT = 600


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("pipeline"),
        None,  # the stack starts a redis-server of its own
        registry,
        fixture_release,
        apis=2,
        workers=2,
        **{"build.failureTTL": "3s"},
    ) as s:
        yield s


def schematic(stack: Stack, tag: str, extra: str = "") -> str:
    """A schematic of its own per test (``tag`` in the kernel args), so keys never collide."""
    return stack.create_schematic(f"customization:\n  extraKernelArgs:\n    - test={tag}\n{extra}")


def url(stack: Stack, sid: str, path: str, api: int = 0) -> str:
    return f"{stack.apis[api].url}/image/{sid}/{VERSION}/{path}"


def key_of(response: requests.Response) -> str:
    return response.headers["ETag"].strip('"')


def cache_client(stack: Stack) -> RegistryClient:
    oci = stack.config["cache"]["oci"]
    return RegistryClient(RepositoryOptions(oci["registry"], oci["namespace"], oci["repository"], True))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def records_of(stack: Stack, sid: str, path: str | None = None) -> dict[str, dict[str, str]]:
    """The build records (by key) whose request names schematic ``sid`` (and ``path``, if given):
    a test's own builds, whatever else the shared stack has built."""
    found = {}
    for name in stack.redis.scan_iter("if:build:rec:*"):
        key = name.decode().rsplit(":", 1)[1]
        record = stack.record(key)
        request = json.loads(record.get("request") or "{}")
        if request.get("schematic") == sid and path in (None, request.get("path")):
            found[key] = record
    return found


def test_fifty_concurrent_requests_through_two_apis_make_one_build(stack: Stack) -> None:
    sid = schematic(stack, "fifty", EXTENSIONS.removeprefix("customization:\n"))
    path = "initramfs-amd64.xz"

    def fetch(i: int) -> requests.Response:
        return requests.get(url(stack, sid, path, api=i % 2), timeout=BUILD_WAIT)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(fetch, range(50)))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses if r.status_code != 200]
    assert len({sha(r.content) for r in responses}) == 1
    assert len({key_of(r) for r in responses}) == 1
    key = key_of(responses[0])
    assert stack.runs(key) == 1
    assert stack.record(key)["status"] == "succeeded"
    assert responses[0].headers["Content-Type"] == "application/x-xz"
    assert responses[0].headers["Content-Disposition"] == f'attachment; filename="{path}"'
    assert int(responses[0].headers["Content-Length"]) == len(responses[0].content)
    # The initramfs (zstd from 1.10 on, whatever its name says).
    assert responses[0].content[:4] in (b"\xfd7zX", b"\x28\xb5\x2f\xfd")


def test_respond_async_then_poll_then_download(stack: Stack) -> None:
    sid = schematic(stack, "async")
    first = requests.get(
        url(stack, sid, "kernel-amd64"),
        headers={"Prefer": "respond-async"},
        allow_redirects=False,
        timeout=30,
    )
    assert first.status_code == 202, first.text
    assert first.headers["Preference-Applied"] == "respond-async"
    location = first.headers["Location"]
    assert location.startswith("/builds/") and len(location) == len("/builds/") + 64
    assert 1 <= int(first.headers["Retry-After"]) <= 30
    body = first.json()
    assert body["status"] in ("queued", "running", "succeeded")
    assert set(body) == {
        "status", "queuePosition", "stage", "progress", "etaSeconds", "startedAt", "finishedAt",
        "error", "url",
    }  # fmt: skip
    deadline = time.monotonic() + BUILD_WAIT
    seen = []
    while True:
        status = requests.get(f"{stack.apis[1].url}{location}", timeout=30)
        assert status.status_code == 200, status.text
        doc = status.json()
        seen.append(doc["status"])
        if doc["status"] == "succeeded":
            break
        assert doc["status"] in ("queued", "running"), doc
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert doc["progress"] == 1.0 and doc["error"] is None
    assert doc["startedAt"] and doc["finishedAt"]
    download = requests.get(doc["url"], timeout=60)
    assert download.status_code == 200
    assert key_of(download) == location.removeprefix("/builds/")
    assert download.content[0x202:0x206] == b"HdrS"  # the Linux boot protocol header of a bzImage
    # Asking async for a cached asset just serves it.
    again = requests.get(url(stack, sid, "kernel-amd64"), headers={"Prefer": "respond-async"}, timeout=60)
    assert again.status_code == 200 and again.content == download.content
    assert stack.runs(key_of(download)) == 1


def test_unknown_build_is_404(stack: Stack) -> None:
    response = requests.get(f"{stack.api.url}/builds/{'0' * 64}", timeout=10)
    assert response.status_code == 404
    assert requests.get(f"{stack.api.url}/builds/nothex", timeout=10).status_code == 404


def _resign(stack: Stack, key: str, private: ec.EllipticCurvePrivateKey) -> None:
    client = cache_client(stack)
    digest = client.resolve(key)
    assert digest is not None
    oci = stack.config["cache"]["oci"]
    payload = simple_signing_payload(f"{oci['registry']}/{oci['namespace']}/{oci['repository']}", digest)
    signature = private.sign(payload, ec.ECDSA(hashes.SHA256()))
    push_legacy_signatures(client, digest, [SignatureLayer(payload, signature)])


def test_entry_with_a_bad_signature_is_rebuilt_not_served(stack: Stack) -> None:
    sid = schematic(stack, "badsig")
    path = "cmdline-metal-amd64"
    first = requests.get(url(stack, sid, path), timeout=BUILD_WAIT)
    assert first.status_code == 200
    key = key_of(first)
    assert stack.runs(key) == 1
    # Someone without the factory's key replaces the signature: the entry must not be trusted.
    _resign(stack, key, ec.generate_private_key(ec.SECP256R1()))
    second = requests.get(url(stack, sid, path, api=1), timeout=BUILD_WAIT)
    assert second.status_code == 200 and second.content == first.content
    assert stack.runs(key) == 2
    # The rebuilt entry carries a valid signature again: served without a third build.
    third = requests.get(url(stack, sid, path), timeout=60)
    assert third.status_code == 200 and stack.runs(key) == 2
    # And the published signature verifies with the key the factory serves.
    pem = requests.get(f"{stack.api.url}/oci/cosign/signing-key.pub", timeout=10)
    assert pem.status_code == 200 and pem.headers["Content-Type"] == "application/x-pem-file"
    assert b"BEGIN PUBLIC KEY" in pem.content
    client = cache_client(stack)
    digest = client.resolve(key)
    assert digest is not None
    sig_manifest = client.get_manifest(signature_tag(digest))
    assert sig_manifest is not None
    layer = sig_manifest.document["layers"][0]
    payload = client.get_blob(layer["digest"], 1 << 20)
    assert (
        payload is not None and json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest
    )
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(pem.content)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]),
        payload,
        ec.ECDSA(hashes.SHA256()),
    )


def test_permanent_failure_reaches_every_waiter_and_is_remembered(stack: Stack) -> None:
    # dual-boot disk images do not exist for arm64: the imager refuses (400), after resolution.
    sid = schematic(stack, "dualboot", "  bootloader: dual-boot\n")
    path = "metal-arm64.raw.xz"
    with ThreadPoolExecutor(10) as pool:
        responses = list(
            pool.map(lambda i: requests.get(url(stack, sid, path, i % 2), timeout=BUILD_WAIT), range(10))
        )
    assert {r.status_code for r in responses} == {400}, [(r.status_code, r.text) for r in responses]
    assert len({r.text for r in responses}) == 1
    assert "dual-boot" in responses[0].text and responses[0].text.endswith("\n")
    (key, record), *others = records_of(stack, sid, path).items()  # this test's own build, by its key
    assert others == [] and record["status"] == "failed", (record, others)
    assert stack.runs(key) == 1
    # A storm of identical requests within build.failureTTL gets the remembered answer, no build.
    again = requests.get(url(stack, sid, path), timeout=60)
    assert (again.status_code, again.text) == (400, responses[0].text)
    assert stack.runs(key) == 1
    status = requests.get(f"{stack.api.url}/builds/{key}", timeout=10).json()
    assert status["status"] == "failed" and status["error"] == responses[0].text.rstrip("\n")
    assert status["url"] is None
    # After the TTL the failure is forgotten: one more try.
    time.sleep(3.5)
    later = requests.get(url(stack, sid, path), timeout=BUILD_WAIT)
    assert later.status_code == 400 and stack.runs(key) == 2


def test_head_and_ranges_and_filename(stack: Stack) -> None:
    sid = schematic(stack, "head")
    path = "cmdline-metal-amd64"
    head = requests.head(url(stack, sid, path), timeout=BUILD_WAIT)  # HEAD builds too, as upstream
    assert head.status_code == 200
    size = int(head.headers["Content-Length"])
    body = requests.get(url(stack, sid, path), timeout=60).content
    assert len(body) == size and b"test=head" in body
    part = requests.get(url(stack, sid, path), headers={"Range": "bytes=5-14"}, timeout=60)
    assert part.status_code == 206 and part.content == body[5:15]
    assert part.headers["Content-Range"] == f"bytes 5-14/{size}"
    tail = requests.get(url(stack, sid, path), headers={"Range": "bytes=-4"}, timeout=60)
    assert tail.status_code == 206 and tail.content == body[-4:]
    beyond = requests.get(url(stack, sid, path), headers={"Range": f"bytes={size}-"}, timeout=60)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    hostile = requests.get(
        url(stack, sid, path), params={"filename": '../../etc/passwd"\r\nX-Injected: 1'}, timeout=60
    )
    assert hostile.status_code == 200 and "X-Injected" not in hostile.headers
    disposition = hostile.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="passwd') and "/" not in disposition
    named = requests.get(url(stack, sid, path), params={"filename": "talos.cmdline"}, timeout=60)
    assert named.headers["Content-Disposition"] == 'attachment; filename="talos.cmdline"'


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("metal-amd64.foo", 400, 'error parsing profile from path: invalid profile path: "metal-amd64.foo"'),
        ("metal-sparc.iso", 400, 'error parsing profile from path: invalid architecture: "sparc"'),
    ],
)
def test_upstream_errors(stack: Stack, path: str, status: int, text: str) -> None:
    sid = schematic(stack, "errors")
    response = requests.get(url(stack, sid, path), timeout=60)
    assert (response.status_code, response.text) == (status, text + "\n")


def test_unknown_schematic_and_version(stack: Stack) -> None:
    missing = requests.get(f"{stack.api.url}/image/{'a' * 64}/{VERSION}/metal-amd64.iso", timeout=10)
    assert (missing.status_code, missing.text) == (404, f'schematic ID "{"a" * 64}" not found\n')
    sid = schematic(stack, "version")
    gone = requests.get(f"{stack.api.url}/image/{sid}/v1.5.0/kernel-amd64", timeout=10)
    assert (gone.status_code, gone.text) == (404, "failed to get kernel: version 1.5.0 is not available\n")


def test_pxe_script(stack: Stack) -> None:
    sid = schematic(stack, "pxe")
    response = requests.get(f"{stack.api.url}/pxe/{sid}/{VERSION}/metal-x86_64", timeout=BUILD_WAIT)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    lines = response.text.split("\n")
    assert lines[:3] == ["#!ipxe", "", "imgfree"] and lines[-2:] == ["boot", ""]
    base = "https://localhost"  # http.externalURL's default; no externalPXEURL in this stack
    kernel, cmdline = lines[3].removeprefix("kernel ").split(" ", 1)
    assert kernel == f"{base}/image/{sid}/{VERSION}/kernel-amd64"
    assert lines[4] == f"initrd {base}/image/{sid}/{VERSION}/initramfs-amd64.xz"
    assert cmdline.startswith("talos.platform=metal ") and cmdline.endswith(" test=pxe")
    cmdline_asset = requests.get(url(stack, sid, "cmdline-metal-amd64"), timeout=60)
    assert cmdline_asset.text.strip() == cmdline


def _blocked_slots(stack: Stack, count: int) -> list[str]:
    """Fill the cluster's build slots with leases nobody renews until the test removes them."""
    members = [f"test-blocker-{i}" for i in range(count)]
    stack.redis.zadd("if:build:slots", {m: time.time() + 3600 for m in members})
    return members


def test_cached_requests_are_served_while_200_clients_wait(stack: Stack) -> None:
    sid = schematic(stack, "waiters")
    cached = url(stack, sid, "cmdline-metal-amd64")
    assert requests.get(cached, timeout=BUILD_WAIT).status_code == 200
    blockers = _blocked_slots(stack, 6)  # build.maxConcurrency's default
    results: list[requests.Response] = []
    paths = ["cmdline-metal-arm64", "cmdline-aws-amd64", "cmdline-gcp-amd64", "cmdline-azure-amd64"]
    try:
        pool = ThreadPoolExecutor(200)
        futures = [
            pool.submit(requests.get, url(stack, sid, paths[i % 4], api=i % 2), timeout=BUILD_WAIT)
            for i in range(200)
        ]
        # Every waiter is in: each API process holds 100 requests waiting for a slot.
        waiting: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = sorted(
                record.get("request", "")
                for record in records_of(stack, sid).values()
                if record.get("stage") == "waiting for a build slot"
            )
            if len(waiting) == len(paths):
                break
            time.sleep(0.2)
        assert len(waiting) == len(paths), f"after 60 s only these builds wait for a slot: {waiting}"
        time.sleep(2)  # let the 200 connections land
        assert not any(f.done() for f in futures), [f.result().text for f in futures if f.done()][:3]
        # Cached downloads and the other routes still answer, on both processes.
        for api in (0, 1):
            for _ in range(20):
                quick = requests.get(url(stack, sid, "cmdline-metal-amd64", api), timeout=10)
                assert quick.status_code == 200
            assert requests.get(f"{stack.apis[api].url}/healthz", timeout=10).status_code == 200
    finally:
        stack.redis.zrem("if:build:slots", *blockers)
    results = [f.result() for f in futures]
    pool.shutdown()
    assert {r.status_code for r in results} == {200}, {r.status_code: r.text for r in results}
    for path in paths:
        served = {sha(r.content) for r, i in zip(results, range(200), strict=True) if paths[i % 4] == path}
        assert len(served) == 1


def test_worker_killed_mid_build_is_finished_by_the_other(stack: Stack) -> None:
    sid = schematic(stack, "sigkill", EXTENSIONS.removeprefix("customization:\n"))
    path = "metal-amd64.iso"
    client = cache_client(stack)
    result: dict[str, Any] = {}
    observations: list[tuple[bool, bool]] = []  # (tag visible, signature present) over time
    stop = threading.Event()

    def fetch() -> None:
        result["response"] = requests.get(url(stack, sid, path, api=1), timeout=BUILD_WAIT)

    getter = threading.Thread(target=fetch)
    getter.start()
    key = ""
    deadline = time.monotonic() + 300
    while not key:
        for k in stack.redis.scan_iter("if:build:rec:*"):
            candidate = k.decode().rsplit(":", 1)[1]
            rec = stack.record(candidate)
            if json.loads(rec.get("request", "{}")).get("path") == path and rec.get("stage") == "building":
                key = candidate
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)

    def watch() -> None:
        while not stop.is_set():
            digest = client.resolve(key)
            signed = digest is not None and client.get_manifest(signature_tag(digest)) is not None
            observations.append((digest is not None, signed))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    first = stack.record(key)
    pid = int(first["worker"].rsplit(":", 1)[1])
    victim = next(w for w in stack.workers if w.proc is not None and os.getpgid(pid) == w.proc.pid)
    stack.kill_worker(victim)
    getter.join(BUILD_WAIT)
    stop.set()
    watcher.join()
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.content[32769:32774] == b"CD001"  # an ISO 9660 volume
    final = stack.record(key)
    assert final["status"] == "succeeded" and final["worker"] != first["worker"]
    assert stack.runs(key) == 2
    # Never an entry without its signature; the tag appeared only once the build was complete.
    assert all(signed for visible, signed in observations if visible)
    assert observations and not observations[0][0]
    stack.workers.remove(victim)
    stack.add_worker()


def test_backpressure(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> None:
    root = tmp_path_factory.mktemp("backpressure")
    with factory_stack(root, None, registry, fixture_release, **{"build.maxQueueLength": 2}) as small:
        sid = schematic(small, "bp")
        cached = url(small, sid, "cmdline-metal-amd64")
        assert requests.get(cached, timeout=BUILD_WAIT).status_code == 200
        small.workers[0].stop()  # nothing is built any more: the queue only grows
        for path in ("cmdline-aws-amd64", "cmdline-gcp-amd64"):
            r = requests.get(url(small, sid, path), headers={"Prefer": "respond-async"}, timeout=30)
            assert r.status_code == 202
        full = requests.get(url(small, sid, "cmdline-azure-amd64"), timeout=30)
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0
        assert "queue is full" in full.text
        # Joining a queued build is not a new build: still accepted.
        joined = requests.get(
            url(small, sid, "cmdline-aws-amd64"), headers={"Prefer": "respond-async"}, timeout=30
        )
        assert joined.status_code == 202
        # Cached assets keep being served.
        assert requests.get(cached, timeout=30).status_code == 200
        queued = requests.get(f"{small.api.url}{joined.headers['Location']}", timeout=10).json()
        assert queued["status"] == "queued" and queued["queuePosition"] == 1
