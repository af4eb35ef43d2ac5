"""The asset caches against a real docker-registry and SeaweedFS' S3, cross-checked with skopeo and openssl.

Proves: byte-identical round trips and ranged reads; the upstream entry format as an independent
client sees it (one ``application/data`` layer, a cosign ``.sig`` whose payload openssl verifies
with the public key); unsigned, foreign-signed and replayed-signature entries are misses; publishing
is atomic (a failed signing step leaves the previous state); S3 objects, presigned redirects,
fallback to the registry when S3 is stale or down; and that put() streams (bounded memory).

The redirect tests here check the URL's parameters (X-Amz-Expires, response-content-disposition) and
that it downloads the right bytes; that S3 refuses tampered, expired or re-hosted ones is proved
through a whole factory in ``test_s3_presigned.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from common.cache import (
    AssetInfo,
    CDNCache,
    FileCacheSigner,
    OCIAsset,
    OCICache,
    S3Asset,
    S3Cache,
    build_cache,
    generate_key_pem,
)
from common.cache.base import CHUNK
from common.cache.oci import ANNOTATION_S3_ETAG, LAYER_MEDIA_TYPE
from common.config import Config
from common.config.options import RepositoryOptions, S3Options
from common.cosign.registry import (
    SignatureLayer,
    push_legacy_signatures,
    signature_tag,
    simple_signing_payload,
)
from common.errors import UnavailableError
from common.registry.client import DOCKER_CONFIG, DOCKER_MANIFEST, OCI_MANIFEST, RegistryClient
from devstack.services import RegistryServer, S3Server, free_port
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

MiB = 1 << 20
INFO = AssetInfo(filename="metal-amd64.raw.zst", content_type="application/zstd")


def new_key() -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def sparse_file(path: Path, size: int) -> bytes:
    """A mostly-hole file with random islands (at the start, across chunk borders, at the end)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, CHUNK - 100, 2 * CHUNK + 12345, size - 5000):
            f.seek(offset)
            f.write(os.urandom(5000))
    return path.read_bytes()


@pytest.fixture(scope="module")
def signer() -> FileCacheSigner:
    return FileCacheSigner.from_pem(generate_key_pem())


@pytest.fixture
def repo(registry: RegistryServer) -> RepositoryOptions:
    return RepositoryOptions(
        registry=registry.host, namespace="test", repository=f"cache-{uuid.uuid4().hex[:8]}", insecure=True
    )


@pytest.fixture
def oci(repo: RepositoryOptions, signer: FileCacheSigner) -> OCICache:
    return OCICache.from_options(repo, signer)


@pytest.fixture
def asset_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "asset.raw"
    return path, sparse_file(path, 5 * MiB + 4321)


def test_round_trip_and_ranged_reads(oci: OCICache, asset_file: tuple[Path, bytes]) -> None:
    path, data = asset_file
    key = new_key()
    assert oci.get(key) is None
    oci.put(key, path, INFO)
    asset = oci.get(key)
    assert isinstance(asset, OCIAsset)
    assert asset.size == len(data)
    assert asset.info == INFO
    assert asset.redirect_url("x") is None
    chunks = list(asset.read())
    assert all(0 < len(c) <= CHUNK for c in chunks)
    assert b"".join(chunks) == data
    size = len(data)
    for start, length in [
        (0, 1),
        (CHUNK - 1, 2),
        (CHUNK - 100, 3 * CHUNK),
        (size - 10, None),
        (size - 3, 99),
    ]:
        end = None if length is None else start + length
        assert b"".join(asset.read(start, length)) == data[start:end], (start, length)
    assert b"".join(asset.read(size)) == b""
    reader = asset.read(1)
    next(reader)
    reader.close()  # type: ignore[attr-defined]


def test_independent_clients_verify_format_and_signature(
    oci: OCICache, repo: RepositoryOptions, asset_file: tuple[Path, bytes], skopeo: str, tmp_path: Path
) -> None:
    path, data = asset_file
    key = new_key()
    oci.put(key, path, INFO)
    image = f"docker://{repo.reference}"

    def run(*args: str) -> bytes:
        result = subprocess.run([skopeo, *args], capture_output=True, timeout=60)
        assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr.decode()}"
        return result.stdout

    raw = run("inspect", "--raw", "--tls-verify=false", f"{image}:{key}")
    manifest = json.loads(raw)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [(layer["mediaType"], layer["size"]) for layer in manifest["layers"]] == [
        (LAYER_MEDIA_TYPE, len(data))
    ]
    assert manifest["annotations"]["org.opencontainers.image.title"] == INFO.filename
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    # skopeo 1.9 refuses to copy v2s2 images with non-standard layer types (upstream's format too),
    # so the blob is fetched with plain HTTP: the layer is the asset byte for byte.
    layer = manifest["layers"][0]["digest"]
    blob = requests.get(f"http://{repo.registry}/v2/{repo.path}/blobs/{layer}", timeout=30)
    assert blob.status_code == 200 and blob.content == data

    # the cosign signature, fetched by skopeo, verified by openssl with the public key
    sig_dir = tmp_path / "sig"
    run("copy", "--src-tls-verify=false", f"{image}:{signature_tag(digest)}", f"dir:{sig_dir}")
    sig_manifest = json.loads((sig_dir / "manifest.json").read_text())
    assert sig_manifest["mediaType"] == OCI_MANIFEST
    [layer] = sig_manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload_path = sig_dir / layer["digest"].split(":")[1]
    payload = json.loads(payload_path.read_bytes())
    assert payload["critical"]["image"]["docker-manifest-digest"] == digest
    assert payload["critical"]["identity"]["docker-reference"] == repo.reference
    assert payload["critical"]["type"] == "cosign container image signature"
    (tmp_path / "sig.der").write_bytes(
        base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    )
    (tmp_path / "pub.pem").write_bytes(oci.signer.public_key_pem())
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", str(payload_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Verified OK" in result.stdout, result.stdout + result.stderr


def test_entry_signed_with_another_key_is_a_miss(
    oci: OCICache, repo: RepositoryOptions, asset_file: tuple[Path, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    OCICache.from_options(repo, FileCacheSigner.from_pem(generate_key_pem())).put(key, asset_file[0], INFO)
    assert oci.get(key) is None
    assert "no valid signature" in caplog.text


def test_entry_without_signature_is_a_miss(
    oci: OCICache, repo: RepositoryOptions, asset_file: tuple[Path, bytes]
) -> None:
    key = new_key()
    oci.put(key, asset_file[0], INFO)
    digest = oci.client.resolve(key)
    assert digest is not None and oci.get(key) is not None
    sig_digest = oci.client.resolve(signature_tag(digest))
    response = requests.delete(f"http://{repo.registry}/v2/{repo.path}/manifests/{sig_digest}", timeout=10)
    assert response.status_code == 202
    assert oci.client.resolve(signature_tag(digest)) is None
    assert oci.get(key) is None


def test_signature_of_another_entry_is_not_accepted(oci: OCICache, tmp_path: Path) -> None:
    """A valid signature replayed onto another digest's .sig tag does not vouch for it."""
    genuine, other = tmp_path / "genuine", tmp_path / "other"
    genuine.write_bytes(b"genuine")
    other.write_bytes(b"other")
    key_genuine, key_other = new_key(), new_key()
    oci.put(key_genuine, genuine, INFO)
    oci.put(key_other, other, INFO)
    digest_genuine, digest_other = oci.client.resolve(key_genuine), oci.client.resolve(key_other)
    assert digest_genuine and digest_other
    sig = oci.client.get_manifest(signature_tag(digest_genuine))
    assert sig is not None
    oci.client.put_manifest_bytes(signature_tag(digest_other), sig.body, OCI_MANIFEST)
    assert oci.get(key_other) is None
    asset = oci.get(key_genuine)
    assert asset is not None and b"".join(asset.read()) == b"genuine"


def test_publish_is_atomic(
    oci: OCICache, signer: FileCacheSigner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    path = tmp_path / "asset"
    path.write_bytes(b"first")

    def broken(payload: bytes) -> bytes:
        raise RuntimeError("signing failed")

    with monkeypatch.context() as patch:
        patch.setattr(signer, "sign", broken)
        with pytest.raises(RuntimeError, match="signing failed"):
            oci.put(key, path, INFO)
    assert oci.client.resolve(key) is None
    assert oci.get(key) is None

    oci.put(key, path, INFO)
    path.write_bytes(b"second")
    with monkeypatch.context() as patch:
        patch.setattr(signer, "sign", broken)
        with pytest.raises(RuntimeError):
            oci.put(key, path, INFO)
    asset = oci.get(key)  # the previous entry is untouched
    assert asset is not None and b"".join(asset.read()) == b"first"


def test_corrupt_blob_aborts_a_full_read(
    oci: OCICache, registry: RegistryServer, asset_file: tuple[Path, bytes]
) -> None:
    path, data = asset_file
    data = data + b"unique" + os.urandom(16)
    path.write_bytes(data)
    key = new_key()
    oci.put(key, path, INFO)
    hexdigest = hashlib.sha256(data).hexdigest()
    stored = registry.data_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    stored.write_bytes(b"X" + data[1:])
    asset = oci.get(key)
    assert asset is not None
    with pytest.raises(Exception, match="corrupt"):
        b"".join(asset.read())


def test_registry_down_is_unavailable(signer: FileCacheSigner) -> None:
    repo = RepositoryOptions(
        registry=f"127.0.0.1:{free_port()}", namespace="x", repository="y", insecure=True
    )
    with pytest.raises(UnavailableError):
        OCICache.from_options(repo, signer).get(new_key())


# --- S3 -----------------------------------------------------------------------------------------


@pytest.fixture
def s3_options(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Options:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("CF_ACCESS_KEY", raising=False)
    monkeypatch.delenv("CF_SECRET_KEY", raising=False)
    bucket = f"cache-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    return S3Options(
        bucket=bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        insecure=True,
        enabled=True,
        presignedURLTTL=timedelta(minutes=10),
    )


@pytest.fixture
def s3(oci: OCICache, s3_options: S3Options) -> S3Cache:
    return S3Cache(oci, s3_options)


def test_s3_put_get_redirect(
    s3: S3Cache, s3_server: S3Server, s3_options: S3Options, asset_file: tuple[Path, bytes]
) -> None:
    path, data = asset_file
    key = new_key()
    assert s3.get(key) is None
    s3.put(key, path, INFO)

    head = s3_server.client().head_object(Bucket=s3_options.bucket, Key=f"assets/{key}")
    assert head["ContentType"] == INFO.content_type
    assert head["ContentDisposition"] == f'attachment; filename="{INFO.filename}"'
    assert head["ContentLength"] == len(data)
    # the signed OCI entry holds the asset too, and the object's ETag
    entry = s3.oci.get(key)
    assert entry is not None and entry.annotations[ANNOTATION_S3_ETAG] == head["ETag"]
    assert b"".join(entry.read()) == data

    asset = s3.get(key)
    assert isinstance(asset, S3Asset)
    assert asset.size == len(data)
    assert b"".join(asset.read()) == data
    assert b"".join(asset.read(CHUNK - 7, CHUNK + 9)) == data[CHUNK - 7 : 2 * CHUNK + 2]
    assert b"".join(asset.read(len(data) - 3)) == data[-3:]

    url = asset.redirect_url("custom-name.raw.zst")
    assert url is not None
    parts = urlsplit(url)
    assert parts.path == f"/{s3_options.bucket}/assets/{key}"  # path-style for an explicit endpoint
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["response-content-disposition"] == ['attachment; filename="custom-name.raw.zst"']
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Disposition"] == 'attachment; filename="custom-name.raw.zst"'


def test_stale_s3_object_falls_back_to_the_registry(
    s3: S3Cache, s3_server: S3Server, s3_options: S3Options, asset_file: tuple[Path, bytes]
) -> None:
    path, data = asset_file
    key = new_key()
    s3.put(key, path, INFO)
    # same size, other bytes: only the ETag (If-Match) can tell
    s3_server.client().put_object(Bucket=s3_options.bucket, Key=f"assets/{key}", Body=os.urandom(len(data)))
    asset = s3.get(key)
    assert isinstance(asset, OCIAsset)
    assert asset.redirect_url(INFO.filename) is None
    assert b"".join(asset.read()) == data


def test_s3_object_gone_after_get_reads_from_the_registry(
    s3: S3Cache, s3_server: S3Server, s3_options: S3Options, asset_file: tuple[Path, bytes]
) -> None:
    path, data = asset_file
    key = new_key()
    s3.put(key, path, INFO)
    asset = s3.get(key)
    assert isinstance(asset, S3Asset)
    s3_server.client().delete_object(Bucket=s3_options.bucket, Key=f"assets/{key}")
    assert b"".join(asset.read(10, 100)) == data[10:110]


def test_s3_unreachable_falls_back_to_the_registry(
    s3: S3Cache, s3_options: S3Options, asset_file: tuple[Path, bytes]
) -> None:
    path, data = asset_file
    key = new_key()
    s3.put(key, path, INFO)
    down = S3Options(**{**s3_options.__dict__, "endpoint": f"127.0.0.1:{free_port()}"})
    asset = S3Cache(s3.oci, down).get(key)
    assert isinstance(asset, OCIAsset)
    assert asset.redirect_url(INFO.filename) is None
    assert b"".join(asset.read()) == data
    # and a put cannot silently skip S3
    with pytest.raises(UnavailableError):
        S3Cache(s3.oci, down).put(new_key(), path, INFO)


def test_upstream_reference_entries_are_understood(
    s3: S3Cache, s3_server: S3Server, s3_options: S3Options, tmp_path: Path
) -> None:
    """An entry as upstream's S3 cache writes it: the OCI layer is only ``{"etag": …}``."""
    key = new_key()
    data = os.urandom(1000)
    client = s3_server.client()
    client.put_object(Bucket=s3_options.bucket, Key=f"assets/{key}", Body=data)
    etag = client.head_object(Bucket=s3_options.bucket, Key=f"assets/{key}")["ETag"]
    _push_upstream_entry(s3.oci, key, json.dumps({"etag": etag}).encode() + b"\n")
    asset = s3.get(key)
    assert isinstance(asset, S3Asset) and asset.fallback is None
    assert b"".join(asset.read()) == data
    client.put_object(Bucket=s3_options.bucket, Key=f"assets/{key}", Body=b"changed")
    assert s3.get(key) is None  # stale and nothing to fall back to: rebuild


def _push_upstream_entry(oci: OCICache, key: str, content: bytes) -> None:
    """Upstream's layout: tag first (no annotations), then the cosign signature."""
    client: RegistryClient = oci.client
    layer = client.push_blob(content)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [layer]}, "config": {}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": client.push_blob(config)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "size": len(content), "digest": layer}],
    }
    digest = client.put_manifest(key, manifest, DOCKER_MANIFEST)
    payload = simple_signing_payload(oci.docker_reference, digest)
    push_legacy_signatures(client, digest, [SignatureLayer(payload, oci.signer.sign(payload))])


def test_build_cache_with_cdn_rewrites_the_redirect(
    repo: RepositoryOptions, s3_options: S3Options, signer: FileCacheSigner, asset_file: tuple[Path, bytes]
) -> None:
    config = Config()
    config.cache.oci = repo
    config.cache.s3 = s3_options
    config.cache.cdn.enabled = True
    config.cache.cdn.host = "cdn.example.com:3000"
    config.cache.cdn.trimPrefix = f"/{s3_options.bucket}"
    cache = build_cache(config, signer)
    assert isinstance(cache, CDNCache)
    key = new_key()
    cache.put(key, asset_file[0], INFO)
    asset = cache.get(key)
    assert asset is not None
    url = asset.redirect_url(INFO.filename)
    assert url is not None
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "cdn.example.com:3000", f"/assets/{key}")
    assert "X-Amz-Signature=" in parts.query
    assert b"".join(asset.read(0, 10)) == asset_file[1][:10]


# --- memory ---------------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import json, os, resource, sys
    from pathlib import Path
    from common.cache import AssetInfo, FileCacheSigner, OCICache, S3Cache, generate_key_pem
    from common.config.options import RepositoryOptions, S3Options

    registry, endpoint, bucket, big = sys.argv[1:5]
    oci = OCICache.from_options(
        RepositoryOptions(registry=registry, namespace="test", repository="memory", insecure=True),
        FileCacheSigner.from_pem(generate_key_pem()),
    )
    cache = S3Cache(oci, S3Options(bucket=bucket, endpoint=endpoint, region="us-east-1", insecure=True))
    info = AssetInfo("big.raw", "application/octet-stream")
    small = Path(big + ".small")
    small.write_bytes(os.urandom(1 << 20))
    cache.put("a" * 64, small, info)  # warm up imports, pools and threads
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cache.put("b" * 64, Path(big), info)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after}))
    """
)


def test_put_streams_large_files(
    registry: RegistryServer, s3_server: S3Server, s3_options: S3Options, tmp_path: Path
) -> None:
    """A 256 MiB asset goes to the registry and S3 with a few MiB of peak RSS growth, not 256."""
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(256 * MiB)
        f.seek(100 * MiB)
        f.write(b"not only zeros")
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, registry.host, s3_server.endpoint, s3_options.bucket, str(big)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    growth_mib = (usage["after_kib"] - usage["before_kib"]) / 1024
    assert growth_mib < 48, usage
    try:
        head = s3_server.client().head_object(Bucket=s3_options.bucket, Key="assets/" + "b" * 64)
        assert head["ContentLength"] == 256 * MiB
    finally:  # the session's S3 keeps objects for the whole session
        s3_server.client().delete_object(Bucket=s3_options.bucket, Key="assets/" + "b" * 64)
