"""``<asset>.sha256`` and ``<asset>.sha512`` through a real stack, checked with coreutils' sha256sum -c
and sha512sum -c against the downloaded ISO, raw disk and installer tar; ``<asset>.sigstore.json``
checked with the project's cosign public-key verifier and parsed with sigstore-python's bundle models;
cold requests, entries cached before checksums were stored, and tampered entries. About 60 s (four
builds, one rebuild, two stacks)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sigstore_models.bundle.v1 import Bundle

from common.cache.oci import ANNOTATION_SHA512, OCICache
from common.cache.signing import FileCacheSigner
from common.config.options import RepositoryOptions
from common.cosign.pubkey import PublicKeyCheck, load_public_key
from common.cosign.types import SIGSTORE_BUNDLE_MEDIA_TYPE, BundleSignature, SignatureError
from common.registry.client import DOCKER_MANIFEST, RegistryClient
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration
VERSION = "v1.12.4"
ASSETS = ("metal-amd64.iso", "metal-amd64.raw.zst", "installer-amd64.tar")
BUILD_WAIT = 300


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(tmp_path_factory.mktemp("checksums"), redis_server, registry, fixture_release) as s:
        yield s


def cache_of(stack: Stack) -> OCICache:
    """The stack's OCI cache, opened with its signing key."""
    options = stack.config["cache"]["oci"]
    fields = ("registry", "namespace", "repository", "insecure")
    client = RegistryClient(RepositoryOptions(**{k: options[k] for k in fields}))
    return OCICache(client, FileCacheSigner.from_path(stack.config["cache"]["signingKeyPath"]))


def url(stack: Stack, sid: str, path: str) -> str:
    return f"{stack.api.url}/image/{sid}/{VERSION}/{path}"


def test_sha256sum_and_sha512sum_accept_the_downloads(stack: Stack, tmp_path: Path) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums\n")
    for path in ASSETS:
        # the checksum first: it builds (or waits for) the asset like a download would
        sha256 = requests.get(url(stack, sid, path + ".sha256"), timeout=BUILD_WAIT)
        assert sha256.status_code == 200, sha256.text
        assert sha256.headers["Content-Type"] == "text/plain; charset=utf-8"
        asset = requests.get(url(stack, sid, path), timeout=BUILD_WAIT)
        assert asset.status_code == 200, asset.text
        (tmp_path / path).write_bytes(asset.content)
        sha512 = requests.get(url(stack, sid, path + ".sha512"), timeout=60)
        assert sha512.status_code == 200, sha512.text
        (tmp_path / f"{path}.sha256").write_text(sha256.text)
        (tmp_path / f"{path}.sha512").write_text(sha512.text)
        assert sha256.text == f"{hashlib.sha256(asset.content).hexdigest()}  {path}\n"
        for tool, suffix in (("sha256sum", ".sha256"), ("sha512sum", ".sha512")):
            checked = subprocess.run(
                [tool, "-c", f"{path}{suffix}"], cwd=tmp_path, capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0 and checked.stdout == f"{path}: OK\n", checked
        head = requests.head(url(stack, sid, path + ".sha512"), timeout=60)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(sha512.text))
        assert head.headers["Content-Type"] == "text/plain; charset=utf-8"
        key = asset.headers["ETag"].strip('"')
        assert stack.runs(key) == 1  # checksums never rebuild


def test_sigstore_bundles_verify_with_the_cache_key_and_name_only_their_asset(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums\n")
    key = load_public_key(requests.get(f"{stack.api.url}/oci/cosign/signing-key.pub", timeout=30).content)
    check = PublicKeyCheck(key)
    digests = {}
    for path in ("metal-amd64.iso", "installer-amd64.tar"):
        asset = requests.get(url(stack, sid, path), timeout=BUILD_WAIT).content
        digests[path] = "sha256:" + hashlib.sha256(asset).hexdigest()
        response = requests.get(url(stack, sid, path + ".sigstore.json"), timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        parsed = Bundle.from_json(response.content)  # the protobuf-specs schema, as sigstore-python reads it
        assert parsed.media_type == SIGSTORE_BUNDLE_MEDIA_TYPE and parsed.dsse_envelope is not None
        statement = json.loads(base64.b64decode(response.json()["dsseEnvelope"]["payload"]))
        assert statement["subject"] == [
            {
                "name": path,
                "digest": {"sha256": digests[path][7:], "sha512": hashlib.sha512(asset).hexdigest()},
            }
        ]
        check.verify(digests[path], BundleSignature(response.content))
    iso_bundle = requests.get(url(stack, sid, "metal-amd64.iso.sigstore.json"), timeout=60).content
    with pytest.raises(SignatureError, match="does not name"):
        check.verify(digests["installer-amd64.tar"], BundleSignature(iso_bundle))
    forged = json.loads(iso_bundle)
    forged["dsseEnvelope"]["payload"] = base64.b64encode(
        base64.b64decode(forged["dsseEnvelope"]["payload"]).replace(
            b"metal-amd64.iso", b"installer-amd64.tar"
        )
    ).decode()
    with pytest.raises(SignatureError, match="does not verify"):
        check.verify(digests["metal-amd64.iso"], BundleSignature(json.dumps(forged).encode()))


def test_a_checksum_of_an_asset_not_built_yet_can_be_polled(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums-async\n")
    pending = requests.get(
        url(stack, sid, "kernel-amd64.sha512"), headers={"Prefer": "respond-async"}, timeout=60
    )
    assert pending.status_code == 202, pending.text
    assert pending.headers["Location"].startswith("/builds/")


def _publish_without_sha512(cache: OCICache, key: str, sha512: str | None) -> str:
    """Rewrites the entry as an older factory (no annotation) or an attacker (``sha512``, unsigned) would."""
    entry = cache.get(key)
    assert entry is not None
    manifest = cache.client.get_manifest(entry.manifest_digest)
    assert manifest is not None
    document = manifest.document
    assert document["annotations"][ANNOTATION_SHA512]  # written at build time
    del document["annotations"][ANNOTATION_SHA512]
    if sha512 is not None:
        document["annotations"][ANNOTATION_SHA512] = sha512
    body = json.dumps(document, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    cache.client.put_manifest_bytes(digest, body, DOCKER_MANIFEST)
    if sha512 is None:
        cache._sign(digest)  # an older factory signed what it wrote
    cache.client.put_manifest_bytes(key, body, DOCKER_MANIFEST)
    return digest


def _built_unseen(stack: Stack, sid: str, path: str) -> str:
    """Builds ``path`` without the API ever serving it (so no process remembers the entry, and what the
    next request reads is what the registry holds); returns its key."""
    pending = requests.get(url(stack, sid, path), headers={"Prefer": "respond-async"}, timeout=60)
    assert pending.status_code == 202, pending.text
    location = pending.headers["Location"]
    deadline = time.monotonic() + BUILD_WAIT
    while time.monotonic() < deadline:
        status = requests.get(f"{stack.api.url}{location}", timeout=30).json()["status"]
        if status == "succeeded":
            return location.rsplit("/", 1)[1]
        assert status in ("queued", "running"), status
        time.sleep(0.5)
    raise AssertionError(f"{path} was not built in {BUILD_WAIT} s")


def test_older_entries_get_their_checksum_computed_once_and_stored(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums-old\n")
    key = _built_unseen(stack, sid, "cmdline-metal-amd64")
    cache = cache_of(stack)
    _publish_without_sha512(cache, key, None)
    answer = requests.get(url(stack, sid, "cmdline-metal-amd64.sha512"), timeout=60)
    content = requests.get(url(stack, sid, "cmdline-metal-amd64"), timeout=60).content
    expected = hashlib.sha512(content).hexdigest()
    assert answer.text == f"{expected}  cmdline-metal-amd64\n"
    stored = cache.get(key)  # re-published, signed, with the annotation
    assert stored is not None and stored.annotations[ANNOTATION_SHA512] == expected
    assert stack.runs(key) == 1


def test_a_tampered_entrys_checksum_is_never_served(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums-tampered\n")
    key = _built_unseen(stack, sid, "cmdline-metal-amd64")
    forged = "0" * 128
    _publish_without_sha512(cache_of(stack), key, forged)  # the forged manifest is not signed
    answer = requests.get(url(stack, sid, "cmdline-metal-amd64.sha512"), timeout=BUILD_WAIT)
    assert answer.status_code == 200, answer.text
    assert forged not in answer.text
    content = requests.get(url(stack, sid, "cmdline-metal-amd64"), timeout=60).content
    assert answer.text == f"{hashlib.sha512(content).hexdigest()}  cmdline-metal-amd64\n"
    assert stack.runs(key) == 2  # the unsigned entry was a miss: rebuilt before answering


def test_checksums_of_assets_in_s3_come_from_the_signed_entry(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
    s3_server: S3Server,
) -> None:
    root = tmp_path_factory.mktemp("checksums-s3")
    with factory_stack(root, redis_server, registry, fixture_release, s3=s3_server) as s3_stack:
        sid = s3_stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=checksums-s3\n")
        redirect = requests.get(
            url(s3_stack, sid, "metal-amd64.iso"), allow_redirects=False, timeout=BUILD_WAIT
        )
        assert redirect.status_code == 302, redirect.text
        iso = requests.get(redirect.headers["Location"], timeout=120).content
        for algorithm in ("sha256", "sha512"):
            answer = requests.get(url(s3_stack, sid, f"metal-amd64.iso.{algorithm}"), timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.text == f"{hashlib.new(algorithm, iso).hexdigest()}  metal-amd64.iso\n"
