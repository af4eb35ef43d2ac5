"""Answers a CDN or caching proxy can reuse (``api.rendering.asset_response``), checked with curl and
with a real cache: Debian's nginx ``proxy_cache`` (``tests/support/caching_proxy.py``).

One stack in S3 mode builds one cheap asset. iPXE gets its bytes (streamed) with ``ETag``,
``Last-Modified`` (the S3 object's), ``Cache-Control: public, max-age=3600`` and ``Repr-Digest``;
conditional requests get 304 (GET and HEAD), a stale ``If-Range`` gets the whole asset. Anyone else
gets the 302 with a ``max-age`` that ends five minutes before the presigned URL does, and
``Vary: User-Agent``. Through nginx, repeats are hits that never reach the factory, and an expired
entry is revalidated: the factory answers 304 and nginx serves what it had.

About 15 s on 2 busy cores (one stack, one build, one nginx).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.release.release import Release
from devstack.services import RegistryServer, S3Server
from tests.support.caching_proxy import CachingProxy
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
ASSET = "cmdline-metal-amd64"  # cheap to build: the kernel command line as text
IPXE = "User-Agent: iPXE/1.21.1"  # streamed, never redirected


def curl(url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request by curl, which follows nothing."""
    body_to = "/dev/null" if "-I" in args else "-"  # with -I, curl writes the headers there too
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", body_to, "--max-time", "60", *args, url],
        capture_output=True,
        check=True,
        timeout=90,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryServer,
    s3_server: S3Server,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("http-caching"), None, registry, fixture_release, s3=s3_server
    ) as s:
        yield s


@pytest.fixture(scope="module")
def url(stack: Stack) -> str:
    sid = stack.create_schematic("customization:\n  extraKernelArgs: [test=http-caching]\n")
    found = f"{stack.api.url}/image/{sid}/{VERSION}/{ASSET}"
    built = requests.get(found, allow_redirects=False, timeout=600)
    assert built.status_code == 302, built.text
    return found


def test_streamed_bytes_carry_validators_and_conditionals_get_304(url: str) -> None:
    status, headers, body = curl(url, "-H", IPXE)
    assert status == 200 and body.strip()
    etag, modified = headers["etag"], headers["last-modified"]
    assert headers["cache-control"] == "public, max-age=3600"
    assert headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    assert abs((parsedate_to_datetime(modified) - datetime.now(UTC)).total_seconds()) < 3600

    for method in ([], ["-I"]):  # GET and HEAD
        status, same, body304 = curl(url, "-H", IPXE, "-H", f"If-None-Match: {etag}", *method)
        assert status == 304 and body304 == b""
        assert same["etag"] == etag and same["cache-control"] == "public, max-age=3600"
    assert curl(url, "-H", IPXE, "-H", 'If-None-Match: "other"')[0] == 200
    assert curl(url, "-H", IPXE, "-H", f"If-Modified-Since: {modified}")[0] == 304
    earlier = format_datetime(parsedate_to_datetime(modified).replace(year=2020), usegmt=True)
    assert curl(url, "-H", IPXE, "-H", f"If-Modified-Since: {earlier}")[0] == 200

    status, _, part = curl(url, "-H", IPXE, "-H", "Range: bytes=0-3", "-H", f"If-Range: {etag}")
    assert (status, part) == (206, body[:4])
    status, _, whole = curl(url, "-H", IPXE, "-H", "Range: bytes=0-3", "-H", 'If-Range: "stale"')
    assert (status, whole) == (200, body)  # the client's copy is another one: all of it


def test_a_redirect_may_be_kept_until_shortly_before_its_url_expires(url: str) -> None:
    status, headers, _ = curl(url)
    assert status == 302
    query = parse_qs(urlsplit(headers["location"]).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    left = signed.timestamp() + int(query["X-Amz-Expires"][0]) - time.time()
    cache_control = headers["cache-control"]
    assert cache_control.startswith("public, max-age=")
    max_age = int(cache_control.removeprefix("public, max-age="))
    assert 0 < max_age <= left - 300 + 2  # ends five minutes before the URL does (2 s for the clock)
    assert "User-Agent" in headers["vary"]  # a stored redirect must not reach iPXE


def test_nginx_reuses_streamed_bytes_and_revalidates_with_304(stack: Stack, url: str, tmp_path: Path) -> None:
    origin = stack.api.url.removeprefix("http://").rstrip("/")
    with CachingProxy(tmp_path / "proxy", origin, valid_for=2) as proxy:
        proxied = url.replace(stack.api.url, proxy.url)
        statuses = [curl(proxied, "-H", IPXE)[1]["x-cache-status"] for _ in range(4)]
        assert statuses == ["MISS", "HIT", "HIT", "HIT"]
        time.sleep(3)  # the entry expires (valid_for); nginx asks the factory with its validators
        status, headers, body = curl(proxied, "-H", IPXE)
        assert (status, headers["x-cache-status"]) == (200, "REVALIDATED")
        assert body == curl(url, "-H", IPXE)[2]
        logged = proxy.statuses()
    del logged["-"]  # readiness checks of nginx's own static file
    # the factory saw the first request and the revalidation, nothing in between
    assert logged == {"MISS": 1, "HIT": 3, "REVALIDATED": 1}
