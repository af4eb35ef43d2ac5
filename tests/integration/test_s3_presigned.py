"""The factory's S3 redirects against an S3 that checks SigV4 (SeaweedFS), downloaded with curl.

moto, the tests' S3 before, accepted wrong credentials, zeroed signatures and rewritten hosts, so
nothing proved that a redirect this factory hands out works against a real S3, nor that S3 would
refuse a tampered one. Here one factory stack in S3 mode (presigned URLs valid
:data:`PRESIGN_SECONDS`) builds a few cheap assets, and:

* the ``Location`` of ``/image/…`` downloads, with curl, the bytes the factory itself streams;
* that URL with an edited signature, expiry or path, or sent with another ``Host``, is 403, and so
  is the unedited URL once it has expired;
* API processes (and a whole stack) given wrong S3 credentials stay ready, name S3 and the reason
  in ``/readyz?verbose``, and stream assets from the registry instead of redirecting to a URL that
  would fail: cached ones, and new ones whose upload S3 refused — never a 500;
* CDN mode: with nginx as the CDN (``tests/support/cdn.py``: origin path ``/<bucket>``, query string
  forwarded as is, the S3 endpoint as ``Host``) the rewritten URLs download the same bytes, and a
  tampered one is still refused by S3 behind it.

About 60 s on 2 busy cores (two stacks, three extra API processes, nginx).
"""

from __future__ import annotations

import copy
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.factory import FactoryAPI
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server
from tests.support.cdn import NginxCDN
from tests.support.factory import api_server
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
ASSET = "cmdline-metal-amd64"  # cheap to build: the kernel command line as text
OTHER = "cmdline-metal-arm64"
PRESIGN_SECONDS = 6
IPXE = {"User-Agent": "iPXE/1.21.1"}  # never redirected: the factory streams the bytes itself


def curl(url: str, *headers: str) -> tuple[int, bytes]:
    """(status, body) of a plain GET by curl, which follows nothing and sends only the given headers."""
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, check=True, timeout=90).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


def wrong_credentials() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "IF" + secrets.token_hex(9).upper(), "AWS_SECRET_ACCESS_KEY": "x" * 40}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    s3_server: S3Server,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("s3-presigned"),
        redis_server,
        registry,
        fixture_release,
        s3=s3_server,
        **{"cache.s3.presignedURLTTL": f"{PRESIGN_SECONDS}s"},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def schematic(stack: Stack) -> str:
    return stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=presigned\n")


@pytest.fixture(scope="module")
def streamed(stack: Stack, schematic: str) -> dict[str, bytes]:
    """Both assets built, and their bytes as the factory streams them (iPXE is never redirected)."""
    found = {}
    for path in (ASSET, OTHER):
        response = requests.get(
            f"{stack.api.url}/image/{schematic}/{VERSION}/{path}", headers=IPXE, timeout=600
        )
        assert response.status_code == 200, response.text
        found[path] = response.content
    assert b"test=presigned" in found[ASSET]
    return found


def redirect(api_url: str, schematic: str, path: str = ASSET) -> str:
    response = requests.get(
        f"{api_url}/image/{schematic}/{VERSION}/{path}", allow_redirects=False, timeout=600
    )
    assert response.status_code == 302, (response.status_code, response.text)
    location: str = response.headers["Location"]
    return location


def test_redirect_downloads_the_asset(
    stack: Stack, schematic: str, streamed: dict[str, bytes], s3_server: S3Server
) -> None:
    url = redirect(stack.api.url, schematic)
    assert url.startswith(f"{s3_server.url}/{stack.bucket}/assets/")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(PRESIGN_SECONDS)]
    assert query["X-Amz-Credential"][0].startswith(f"{s3_server.access_key}/")
    assert curl(url) == (200, streamed[ASSET])
    headers = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", url], capture_output=True, check=True
    )
    assert f'filename="{ASSET}"'.encode() in headers.stdout  # response-content-disposition honoured


def test_tampered_urls_are_refused(
    stack: Stack, schematic: str, streamed: dict[str, bytes], s3_server: S3Server
) -> None:
    url = redirect(stack.api.url, schematic)
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    other_key = urlsplit(redirect(stack.api.url, schematic, OTHER)).path.rsplit("/", 1)[1]
    own_key = urlsplit(url).path.rsplit("/", 1)[1]
    assert other_key != own_key
    tampered = {
        "signature": url.replace(f"X-Amz-Signature={signature}", f"X-Amz-Signature={flipped}"),
        "expiry": url.replace(f"X-Amz-Expires={PRESIGN_SECONDS}", "X-Amz-Expires=604800"),
        # another object of the same bucket, which exists (the next redirect serves it): the path is signed
        "path": url.replace(own_key, other_key),
    }
    for what, edited in tampered.items():
        assert edited != url, what
        status, body = curl(edited)
        assert status == 403, (what, body)
    status, body = curl(url, f"Host: localhost:{s3_server.port}")  # the same server under another name
    assert status == 403, body
    assert curl(url) == (200, streamed[ASSET])  # the untouched URL still works: the edits were refused
    assert curl(redirect(stack.api.url, schematic, OTHER)) == (200, streamed[OTHER])


def test_expired_url_is_refused(stack: Stack, schematic: str, streamed: dict[str, bytes]) -> None:
    url = redirect(stack.api.url, schematic)
    assert curl(url) == (200, streamed[ASSET])
    signed = datetime.strptime(parse_qs(urlsplit(url).query)["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    expires = signed.replace(tzinfo=UTC).timestamp() + PRESIGN_SECONDS
    time.sleep(max(0.0, expires + 2 - time.time()))
    status, body = curl(url)
    assert status == 403, body
    assert curl(redirect(stack.api.url, schematic)) == (200, streamed[ASSET])  # a new one works again


def verbose(api: FactoryAPI) -> dict[str, str]:
    """``/readyz?verbose`` as name → state; the replica itself stays ready (plain ``/readyz`` 200)."""
    assert requests.get(f"{api.url}/readyz", timeout=30).status_code == 200
    response = requests.get(f"{api.url}/readyz?verbose", timeout=30)
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    return {line[3:].partition(" ")[0]: line[3:].partition(" ")[2] for line in lines[:-1]}


@pytest.mark.parametrize("wrong", ["access key", "secret key"])
def test_wrong_credentials_stream_cached_assets_and_say_why(
    wrong: str,
    stack: Stack,
    schematic: str,
    streamed: dict[str, bytes],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    """An API replica whose S3 credentials are wrong, on the stack's cache: it cannot check the S3
    object, so it streams the signed registry copy instead of presigning a URL S3 would refuse."""
    env = wrong_credentials()
    if wrong == "secret key":
        env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    assert verbose(stack.api)["s3"] == "ok"
    with api_server(tmp_path, stack.config, env=env) as api:
        s3 = verbose(api)["s3"]
        code = "InvalidAccessKeyId" if wrong == "access key" else "SignatureDoesNotMatch"
        assert s3.startswith(f"failed: S3 refused the factory's credentials ({code}"), s3
        assert "AWS_ACCESS_KEY_ID" in s3
        for path in (ASSET, OTHER):
            response = requests.get(
                f"{api.url}/image/{schematic}/{VERSION}/{path}", allow_redirects=False, timeout=60
            )
            assert response.status_code == 200, (response.status_code, response.headers, response.text)
            assert response.content == streamed[path]


def test_wrong_credentials_new_builds_are_streamed(
    tmp_path: Path,
    redis_server: RedisServer,
    registry: RegistryServer,
    s3_server: S3Server,
    fixture_release: Release,
) -> None:
    """A whole stack with wrong credentials: S3 refuses the worker's upload, the asset is published to
    the registry alone and streamed (not a 500, not a redirect); the bucket stays empty."""
    env = wrong_credentials()
    with factory_stack(
        tmp_path,
        redis_server,
        registry,
        fixture_release,
        s3=s3_server,
        s3_credentials=(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]),
    ) as wrong:
        assert verbose(wrong.api)["s3"].startswith(
            "failed: S3 refused the factory's credentials (InvalidAccessKeyId"
        )
        sid = wrong.create_schematic("customization:\n  extraKernelArgs:\n    - test=wrong-credentials\n")
        url = f"{wrong.api.url}/image/{sid}/{VERSION}/{ASSET}"
        for _ in range(2):  # the build, then the cached entry
            response = requests.get(url, allow_redirects=False, timeout=600)
            assert response.status_code == 200, (response.status_code, response.text)
            assert b"test=wrong-credentials" in response.content
        assert "S3 refused the upload" in wrong.workers[0].new_log_text()
        listed = s3_server.client().list_objects_v2(Bucket=wrong.bucket)
        assert listed.get("KeyCount", 0) == 0, listed


def test_cdn_urls_work_through_a_cdn_in_front_of_s3(
    stack: Stack, schematic: str, streamed: dict[str, bytes], s3_server: S3Server, tmp_path: Path
) -> None:
    assert stack.bucket is not None
    with NginxCDN(tmp_path / "cdn", s3_server, stack.bucket) as cdn:
        config = copy.deepcopy(stack.config)
        config["cache"]["cdn"] = {"enabled": True, "host": cdn.host, "trimPrefix": cdn.trim_prefix}
        (tmp_path / "api").mkdir()
        with api_server(tmp_path / "api", config, env=stack.env) as api:
            url = redirect(api.url, schematic)
            assert url.startswith(f"{cdn.url}/assets/"), url
            assert curl(url) == (200, streamed[ASSET])
            signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
            status, body = curl(url.replace(signature, "0" * len(signature)))
            assert status == 403, body  # the CDN forwards; S3 behind it still checks
            status, body = curl(f"{s3_server.url}{urlsplit(url).path}?{urlsplit(url).query}")
            assert status != 200, body  # the CDN URL's path is not an S3 path: the CDN is needed
        fetched = [line for line in cdn.access_log.read_text().splitlines() if "X-Amz-Signature=" in line]
        assert len(fetched) == 2 and all(" /assets/" in line for line in fetched), fetched
