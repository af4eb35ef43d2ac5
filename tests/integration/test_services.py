"""The shared fixtures must hand out real, private services; these tests prove it end to end."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urljoin

import pytest
import redis
import requests
from botocore.exceptions import ClientError

from devstack.services import (
    RedisServer,
    RegistryServer,
    S3Server,
    Service,
    ServiceError,
    ServiceTimeoutError,
    port_is_free,
    wait_until,
)

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(base: str, repo: str, data: bytes) -> str:
    """Two-step upload (POST to open a session, PUT with ?digest= to finish), as the spec describes."""
    digest = _digest(data)
    resp = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=5)
    assert resp.status_code == 202, resp.text
    location = urljoin(base + "/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    resp = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=5,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == digest
    return digest


def test_redis_is_private_and_round_trips(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.port != 6379
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_url)
    try:
        # The server answering is the process we started, not some redis that was already there.
        assert int(client.info("server")["process_id"]) == redis_server.pid
        client.set("devstack:probe", b"\x00value\xff")
        assert client.get("devstack:probe") == b"\x00value\xff"
    finally:
        client.close()


def test_registry_oci_push_pull_round_trip(registry: RegistryServer) -> None:
    base, repo, tag = registry.url, "devstack/probe", "v1.0.0"
    layer = os.urandom(256 * 1024)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer_digest = _push_blob(base, repo, layer)
    config_digest = _push_blob(base, repo, config)

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "probe.bin"},
                }
            ],
        }
    ).encode()
    resp = requests.put(
        f"{base}/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=5
    )
    assert resp.status_code == 201, resp.text
    manifest_digest = resp.headers["Docker-Content-Digest"]
    assert manifest_digest == _digest(manifest)

    for ref in (tag, manifest_digest):
        got = requests.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST}, timeout=5)
        assert got.status_code == 200, got.text
        assert got.content == manifest
        assert got.headers["Docker-Content-Digest"] == manifest_digest
        assert got.headers["Content-Type"] == OCI_MANIFEST

    blob = requests.get(f"{base}/v2/{repo}/blobs/{layer_digest}", timeout=5)
    assert blob.status_code == 200
    assert blob.content == layer
    assert requests.get(f"{base}/v2/{repo}/tags/list", timeout=5).json()["tags"] == [tag]

    # delete is enabled in the generated config (the factory's cache eviction relies on it)
    assert requests.delete(f"{base}/v2/{repo}/manifests/{manifest_digest}", timeout=5).status_code == 202
    assert requests.get(f"{base}/v2/{repo}/manifests/{tag}", timeout=5).status_code == 404


def test_registry_is_readable_by_skopeo(registry: RegistryServer, skopeo: str) -> None:
    repo = "devstack/skopeo"
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _push_blob(registry.url, repo, config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    resp = requests.put(
        f"{registry.url}/v2/{repo}/manifests/latest",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=5,
    )
    assert resp.status_code == 201, resp.text
    out = subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:latest"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == manifest


def test_s3_put_get_and_presigned_url(s3_server: S3Server) -> None:
    bucket = f"devstack-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    s3_server.create_bucket(bucket)  # idempotent
    client = s3_server.client()
    body = os.urandom(64 * 1024)
    client.put_object(Bucket=bucket, Key="assets/probe.raw.xz", Body=body)
    assert client.get_object(Bucket=bucket, Key="assets/probe.raw.xz")["Body"].read() == body

    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "assets/probe.raw.xz"}, ExpiresIn=300
    )
    assert url.startswith(s3_server.url + "/")
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.content == body


def test_s3_checks_credentials_and_signatures(s3_server: S3Server, tmp_path: Path) -> None:
    """The dev/test S3 says no (moto said yes to all of these): anonymous requests, another server's
    credentials, a wrong secret and a presigned URL whose signature was edited are all 403."""
    bucket = f"devstack-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"secret bytes")
    assert s3_server.access_key != "test" and len(s3_server.secret_key) >= 40
    assert requests.get(f"{s3_server.url}/{bucket}/k", timeout=10).status_code == 403
    other = S3Server(tmp_path)  # never started: only its freshly made credentials are used
    assert (other.access_key, other.secret_key) != (s3_server.access_key, s3_server.secret_key)
    for access_key, secret_key in [(other.access_key, other.secret_key), (s3_server.access_key, "x" * 40)]:
        intruder = S3Server(tmp_path, s3_server.port, access_key=access_key, secret_key=secret_key)
        with pytest.raises(ClientError) as refused:
            intruder.client().get_object(Bucket=bucket, Key="k")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    url = s3_server.client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    assert requests.get(url, timeout=10).content == b"secret bytes"
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    forged = url.replace(signature, "0" * len(signature))
    assert requests.get(forged, timeout=10).status_code == 403


@pytest.mark.parametrize("cls", [RedisServer, RegistryServer, S3Server], ids=lambda c: c.name)
def test_stop_frees_port_and_is_idempotent(cls: type[Service], tmp_path: Path) -> None:
    service = cls(tmp_path)
    with service:
        assert service.running
        assert not port_is_free(service.port)
        pid = service.pid
        assert pid is not None
    assert not service.running
    assert port_is_free(service.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    service.stop()  # second stop is a no-op
    service.stop()


def test_refuses_port_held_by_someone_else(tmp_path: Path) -> None:
    """An explicit port that is already taken must fail loudly, never talk to the foreign listener."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        service = RedisServer(tmp_path, port=port)
        with pytest.raises(ServiceError, match=r"exited with code .*(?s:.*)Address already in use"):
            service.start(timeout=10)
        assert not service.running


def test_wait_until_timeout_quotes_log(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("line one\nfatal: cannot bind\n")
    with pytest.raises(ServiceTimeoutError, match=r"waiting for the thing(?s:.*)fatal: cannot bind"):
        wait_until(lambda: False, 0.1, "the thing", log_path=log)
    assert wait_until(lambda: 42, 1, "the answer") == 42


def test_s3_takes_a_session_s_worth_of_buckets(s3_server: S3Server) -> None:
    """Every factory stack makes a bucket, and SeaweedFS gives each its own volume: weed mini's
    automatic volume limit ran out after 9 (uploads then fail with InternalError)."""
    client = s3_server.client()
    for n in range(30):
        bucket = f"many-buckets-{n:03d}"
        s3_server.create_bucket(bucket)
        client.put_object(Bucket=bucket, Key="k", Body=b"x" * 65536)
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 65536
