"""The build pipeline end to end: a schematic goes in through the HTTP API, a worker builds the asset
with the imager, the signed cache (OCI, and S3 when enabled) holds it, and the API redirects to S3 or
streams it; what comes back boots under QEMU and shows what the schematic asked for.

One schematic throughout (test_imager_boot's: two official extensions, ``console=ttyS0`` and other
extra kernel args, two META values, which an ISO or PXE boot carries on the command line as
``talos.environment``). Three stacks for the module, sharing one artifact store so the release is
pulled once:

* ``s3_stack``: S3 enabled, ``http.externalPXEURL`` on ``10.0.2.2`` (the host as a QEMU guest sees it).
  Clients on the main host are redirected to presigned S3 URLs; iPXE is streamed.
* ``oci_stack``: no S3, so everything is streamed from the signed OCI entries.
* ``cdn_stack``: S3 behind a CDN and ``cache.redirectPXE: true``, so iPXE is redirected too. The CDN
  is nginx on the host's loopback (``tests/support/cdn.py``), which the guest reaches as
  ``10.0.2.2:<port>`` through slirp; it forwards the presigned query string to the S3 (SeaweedFS,
  which checks the signature) with the ``Host`` the URL was signed for. Its ``trimPrefix`` is ``/``:
  the path stays ``/<bucket>/assets/<key>`` (a path without its leading slash gets it back when the
  URL is rebuilt, as in Go's ``url.URL``), so the CDN's origin path is empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from common.schematic.emit import marshal, schematic_id
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server
from tests.e2e.test_imager_boot import SCHEMATIC, _check_cmdline, _check_report, _ok
from tests.support.cdn import NginxCDN
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import boot, qemu_available
from tests.support.stack import Stack, factory_stack
from worker.imager.build import kernel_cmdline
from worker.imager.cmdline import Cmdline

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed"),
]

VERSION = "v1.12.4"
GUEST_HOST = "10.0.2.2"  # the host's loopback as a slirp guest sees it
BUILD_WAIT = 300  # the first build of a stack pulls the release; all of it on 2 busy cores
TIMEOUT = 240  # one TCG boot takes 10-25 s; room for a busy machine
ISO = "metal-amd64.iso"
KERNEL = "kernel-amd64"
INITRAMFS = "initramfs-amd64.xz"
SCHEMATIC_ID = schematic_id(SCHEMATIC)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImagerHarness]:
    """Only for expectations: the plans' command lines and the extension images' contents."""
    with imager_harness(fixture_release, tmp_path_factory.mktemp("delivery-expect"), SCHEMATIC) as h:
        yield h


@pytest.fixture(scope="module")
def artifact_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact store for every stack of the module (flock-coordinated, shared by processes)."""
    return tmp_path_factory.mktemp("delivery-artifacts")


@pytest.fixture(scope="module")
def stack_factory(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
    artifact_store: Path,
) -> Iterator[Callable[..., Stack]]:
    """Stacks created on demand and stopped at the end of the module."""
    with contextlib.ExitStack() as stop:

        def make(name: str, **kwargs: Any) -> Stack:
            overrides = {"artifacts.storageDir": str(artifact_store), **kwargs.pop("overrides", {})}
            return stop.enter_context(
                factory_stack(
                    tmp_path_factory.mktemp(name),
                    redis_server,
                    registry,
                    fixture_release,
                    **kwargs,
                    **overrides,
                )
            )

        yield make


@pytest.fixture(scope="module")
def s3_stack(stack_factory: Callable[..., Stack], s3_server: S3Server) -> Stack:
    return stack_factory("delivery-s3", s3=s3_server, pxe_host=GUEST_HOST)


@pytest.fixture(scope="module")
def oci_stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory("delivery-oci")


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[NginxCDN]:
    with NginxCDN(tmp_path_factory.mktemp("delivery-cdn-nginx"), s3_server) as server:
        yield server


@pytest.fixture(scope="module")
def cdn_stack(stack_factory: Callable[..., Stack], s3_server: S3Server, cdn: NginxCDN) -> Stack:
    return stack_factory(
        "delivery-cdn",
        s3=s3_server,
        pxe_host=GUEST_HOST,
        overrides={
            "cache.redirectPXE": True,
            "cache.cdn.enabled": True,
            "cache.cdn.host": f"{GUEST_HOST}:{cdn.port}",
            "cache.cdn.trimPrefix": cdn.trim_prefix,
        },
    )


# --- helpers --------------------------------------------------------------------------------------


def _schematic(stack: Stack) -> str:
    sid = stack.create_schematic(marshal(SCHEMATIC).decode())
    assert sid == SCHEMATIC_ID
    return sid


def _image_url(stack: Stack, path: str) -> str:
    return f"{stack.api.url}/image/{SCHEMATIC_ID}/{VERSION}/{path}"


def _key_for(stack: Stack, path: str) -> str:
    """The profile hash the workers built ``path`` under, from the build records in Redis."""
    found = []
    for raw in stack.redis.scan_iter("if:build:rec:*"):
        key = raw.decode().removeprefix("if:build:rec:")
        request = json.loads(stack.record(key).get("request", "{}"))
        if request == {"schematic": SCHEMATIC_ID, "version": VERSION, "path": path}:
            found.append(key)
    assert len(found) == 1, found
    return found[0]


def _presigned_key(stack: Stack, location: str, host: str, filename: str) -> str:
    """Checks a redirect target is the stack's S3 object, presigned for ``filename``; returns the key."""
    parts = urlsplit(location)
    assert parts.scheme == "http" and parts.netloc == host, location
    prefix = f"/{stack.bucket}/assets/"
    assert parts.path.startswith(prefix), location
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and "X-Amz-Signature" in query, location
    assert query["response-content-disposition"] == [f'attachment; filename="{filename}"'], location
    key = parts.path.removeprefix(prefix)
    assert len(key) == 64, location
    return key


def _api_requests(stack: Stack, offset: int) -> list[dict[str, Any]]:
    """The API's access log lines written after ``offset``."""
    with stack.api.log_path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "api.request":
                lines.append(entry)
    return lines


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# --- 1. ISO through the stack with S3: redirected, cached, bootable -------------------------------


def test_iso_is_redirected_to_s3_once_built_and_boots(
    s3_stack: Stack, s3_server: S3Server, harness: ImagerHarness, tmp_path: Path
) -> None:
    stack = s3_stack
    _schematic(stack)
    url = _image_url(stack, ISO)

    started = time.monotonic()
    first = requests.get(url, allow_redirects=False, timeout=BUILD_WAIT)
    built_in = time.monotonic() - started
    # A fresh build waits, then is answered from the cache like any hit: a non-PXE client with S3
    # enabled goes to the presigned S3 URL.
    assert first.status_code == 302, first.text
    key = _presigned_key(stack, first.headers["Location"], s3_server.endpoint, ISO)
    assert key == _key_for(stack, ISO)
    record = stack.record(key)
    assert record["status"] == "succeeded", record
    download = requests.get(first.headers["Location"], timeout=120)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/x-iso9660-image"
    assert download.headers["Content-Disposition"] == f'attachment; filename="{ISO}"'
    iso = tmp_path / ISO
    iso.write_bytes(download.content)
    assert int(record["size"]) == len(download.content)

    result = boot(cdrom=iso, firmware="bios", timeout=TIMEOUT)
    report = _ok(result)
    assert report["boot"] == "bios"
    expected = kernel_cmdline(harness.plan(ISO, VERSION))
    _check_cmdline(expected, VERSION, iso=True)  # the args and META the schematic asked for
    # the hybrid ISO boots GRUB under SeaBIOS, whose linux command puts BOOT_IMAGE first
    assert report["cmdline"] == f"BOOT_IMAGE=/boot/vmlinuz {expected}", result.describe()
    _check_report({**report, "cmdline": expected}, harness, VERSION, expected)

    # A hit: redirected again, to the same bytes, without another imager run.
    second = requests.get(url, allow_redirects=False, timeout=60)
    assert second.status_code == 302, second.text
    assert _presigned_key(stack, second.headers["Location"], s3_server.endpoint, ISO) == key
    again = requests.get(second.headers["Location"], timeout=120)
    assert again.status_code == 200 and _sha(again.content) == _sha(download.content)
    # iPXE is never redirected here (cache.redirectPXE is off): the same bytes, streamed.
    streamed = requests.get(url, headers={"User-Agent": "iPXE/1.21.1"}, allow_redirects=False, timeout=120)
    assert streamed.status_code == 200 and _sha(streamed.content) == _sha(download.content)
    assert streamed.headers["ETag"] == f'"{key}"'

    head = requests.head(url, timeout=60)
    assert head.status_code == 200, head.headers  # HEAD never redirects
    assert head.headers["Content-Length"] == str(len(download.content))
    assert head.headers["Content-Type"] == "application/x-iso9660-image"
    assert head.headers["Content-Disposition"] == f'attachment; filename="{ISO}"'
    assert head.headers["ETag"] == f'"{key}"'
    assert head.content == b""
    assert stack.runs(key) == 1
    print(f"ISO: built and redirected in {built_in:.1f} s, booted in {result.seconds:.1f} s")


# --- 2. OCI only: streamed, with ranges ------------------------------------------------------------


def test_oci_only_streams_the_same_bytes_and_ranges(oci_stack: Stack) -> None:
    stack = oci_stack
    _schematic(stack)
    url = _image_url(stack, ISO)
    first = requests.get(url, allow_redirects=False, timeout=BUILD_WAIT)
    assert first.status_code == 200, first.text
    key = _key_for(stack, ISO)
    assert first.headers["ETag"] == f'"{key}"'
    assert first.headers["Content-Type"] == "application/x-iso9660-image"
    assert first.headers["Content-Disposition"] == f'attachment; filename="{ISO}"'
    assert int(first.headers["Content-Length"]) == len(first.content) == int(stack.record(key)["size"])

    second = requests.get(url, allow_redirects=False, timeout=120)
    assert second.status_code == 200, second.text
    assert _sha(second.content) == _sha(first.content)

    ranged = requests.get(url, headers={"Range": "bytes=100-199"}, allow_redirects=False, timeout=60)
    assert ranged.status_code == 206, ranged.text
    assert ranged.headers["Content-Range"] == f"bytes 100-199/{len(first.content)}"
    assert ranged.headers["Content-Length"] == "100"
    assert ranged.content == first.content[100:200]
    assert stack.runs(key) == 1


# --- 3. iPXE in QEMU: the script, then kernel and initramfs streamed or redirected -----------------


@pytest.mark.parametrize("redirect", [False, True], ids=["streamed", "redirected"])
def test_ipxe_boots_through_the_factory(
    redirect: bool, request: pytest.FixtureRequest, cdn: NginxCDN, harness: ImagerHarness
) -> None:
    stack: Stack = request.getfixturevalue("cdn_stack" if redirect else "s3_stack")
    _schematic(stack)
    port = stack.api.port
    base = f"http://{GUEST_HOST}:{port}/image/{SCHEMATIC_ID}/{VERSION}"
    pxe_path = f"/pxe/{SCHEMATIC_ID}/{VERSION}/metal-amd64"

    started = time.monotonic()
    script = requests.get(f"{stack.api.url}{pxe_path}", timeout=BUILD_WAIT)
    assert script.status_code == 200, script.text
    assert script.headers["Content-Type"] == "text/plain; charset=utf-8"  # what upstream's Go sniffs
    cmdline = kernel_cmdline(harness.plan("cmdline-metal-amd64", VERSION))
    _check_cmdline(cmdline, VERSION, iso=False)
    assert script.text == (
        f"#!ipxe\n\nimgfree\nkernel {base}/{KERNEL} {cmdline}\ninitrd {base}/{INITRAMFS}\nboot\n"
    )

    # Build both assets before the boot (HEAD waits for the build and never redirects), so iPXE
    # only downloads; the keys come back as ETags.
    def head(path: str) -> requests.Response:
        return requests.head(_image_url(stack, path), timeout=BUILD_WAIT)

    with ThreadPoolExecutor(2) as pool:
        heads = dict(zip((KERNEL, INITRAMFS), pool.map(head, (KERNEL, INITRAMFS)), strict=True))
    keys = {}
    for path, response in heads.items():
        assert response.status_code == 200, response.headers
        keys[path] = response.headers["ETag"].strip('"')
        assert keys[path] == _key_for(stack, path)
    built_in = time.monotonic() - started

    api_offset = _log_size(stack.api.log_path)
    cdn_offset = _log_size(cdn.access_log)
    result = boot(
        firmware="bios",
        network=True,
        boot_order="n",
        extra_args=[
            "-netdev",
            f"user,id=n0,bootfile=http://{GUEST_HOST}:{port}{pxe_path}",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],
        timeout=TIMEOUT,
    )
    report = _ok(result)
    assert report["boot"] == "bios"
    assert report["cmdline"] == cmdline, result.describe()
    parsed = Cmdline(report["cmdline"])
    assert parsed.get("console") == ["ttyS0"] and parsed.get("image.factory") == ["test"]
    _check_report(report, harness, VERSION, cmdline)

    # What the guest asked the API for, and how it was answered.
    seen = [(e["method"], e["path"], e["status"]) for e in _api_requests(stack, api_offset)]
    want = 302 if redirect else 200
    assert ("GET", pxe_path, 200) in seen, seen
    for path in (KERNEL, INITRAMFS):
        answers = {status for method, p, status in seen if method == "GET" and p.endswith(f"/{path}")}
        assert answers == {want}, seen
    # What the guest fetched through the CDN (nginx's access log: request line, then S3's status).
    fetches = cdn.access_log.read_bytes()[cdn_offset:].decode("utf-8", "replace")
    for path in (KERNEL, INITRAMFS):
        fetched = any(
            f"GET /{stack.bucket}/assets/{keys[path]}?" in line
            and "X-Amz-Signature=" in line
            and 'HTTP/1.1" 200 ' in line
            for line in fetches.splitlines()
        )
        assert fetched is redirect, fetches[-3000:]
        assert stack.runs(keys[path]) == 1
    print(
        f"iPXE ({'redirected' if redirect else 'streamed'}): assets ready in {built_in:.1f} s,"
        f" booted in {result.seconds:.1f} s"
    )
