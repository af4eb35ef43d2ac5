"""Schematics through the HTTP API (gunicorn) against a real docker-registry and Redis.

Covers issue 3's acceptance: every shared vector round-trips, a separate process reads them back
from the registry alone, two API processes agree at once, concurrent creates write once, the
upstream OCI layout both ways, and stored bytes that no longer hash to their ID are refused.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.services import RedisServer, RegistryServer, free_port
from tests.support.factory import FactoryAPI, api_server, factory_config
from tests.support.fixtures import SCHEMATIC_VECTORS

pytestmark = pytest.mark.integration

REPO = "siderolabs/image-factory/schematics"
SCHEMATIC_MEDIA_TYPE = "application/vnd.sidero.dev-image.schematic"


class LoggingRegistry(RegistryServer):
    """A registry with its access log on, so tests can count the writes it received."""

    def prepare(self) -> None:
        super().prepare()
        config = json.loads(self.config_path.read_text())
        config["log"] = {"level": "info", "accesslog": {"disabled": False}}
        self.config_path.write_text(json.dumps(config))

    def count(self, method: str, path_fragment: str) -> int:
        return sum(
            1
            for line in self.log_path.read_text(errors="replace").splitlines()
            if f'"{method} /v2/' in line and path_fragment in line
        )


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(SCHEMATIC_VECTORS.read_text())
    return vectors


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggingRegistry]:
    with LoggingRegistry(tmp_path_factory.mktemp("schematic-registry")) as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, reg: LoggingRegistry
) -> Iterator[tuple[FactoryAPI, FactoryAPI]]:
    """Two API replicas (separate gunicorn masters) sharing Redis and the registry."""
    config = factory_config(redis_server.url, reg.host)
    with (
        api_server(tmp_path_factory.mktemp("api-a"), dict(config)) as a,
        api_server(tmp_path_factory.mktemp("api-b"), dict(config)) as b,
    ):
        yield a, b


def post(api: FactoryAPI, body: str | bytes) -> requests.Response:
    return requests.post(f"{api.url}/schematics", data=body, timeout=30)


def test_every_shared_vector_round_trips(
    pair: tuple[FactoryAPI, FactoryAPI],
    reg: LoggingRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    a, _ = pair
    vectors = load_vectors()
    for vector in vectors:
        response = post(a, vector["schematic_yaml"])
        assert response.status_code == 201, (vector["source"], response.text)
        assert response.headers["Content-Type"] == "application/json"
        data = response.json()
        assert data["schematic"] == vector["canonical_yaml"], vector["source"]
        assert data["id"] == hashlib.sha256(data["schematic"].encode()).hexdigest()
        if vector["verified"]:
            assert data["id"] == vector["id"], vector["source"]
        got = requests.get(f"{a.url}/schematics/{data['id']}", timeout=10)
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "application/yaml"
        assert got.content == vector["canonical_yaml"].encode()

    # A separate process with an empty Redis of its own can only find them in the registry.
    with (
        RedisServer(tmp_path_factory.mktemp("other-redis")) as other_redis,
        api_server(tmp_path_factory.mktemp("api-c"), factory_config(other_redis.url, reg.host)) as c,
    ):
        for vector in vectors:
            sid = hashlib.sha256(vector["canonical_yaml"].encode()).hexdigest()
            got = requests.get(f"{c.url}/schematics/{sid}", timeout=10)
            assert (got.status_code, got.content) == (200, vector["canonical_yaml"].encode())


def test_upstream_oci_layout(pair: tuple[FactoryAPI, FactoryAPI], reg: LoggingRegistry, skopeo: str) -> None:
    a, _ = pair
    body = "customization:\n  extraKernelArgs: [layout-check]\n"
    sid = post(a, body).json()["id"]
    blob = requests.get(f"{reg.url}/v2/{REPO}/blobs/sha256:{sid}", timeout=10)
    assert blob.status_code == 200
    assert blob.content == b"customization:\n    extraKernelArgs:\n        - layout-check\n"
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{REPO}:{sid}"],
        check=True,
        capture_output=True,
        text=True,
    )
    manifest = json.loads(raw.stdout)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["layers"] == [
        {"mediaType": SCHEMATIC_MEDIA_TYPE, "size": len(blob.content), "digest": f"sha256:{sid}"}
    ]


def _push_like_the_go_factory(reg: RegistryServer, canonical: bytes) -> str:
    """Write a schematic with plain registry calls, the way upstream lays it out."""
    sid = hashlib.sha256(canonical).hexdigest()
    config = b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
    for data in (canonical, config):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"{reg.url}/v2/{REPO}/blobs/uploads/", timeout=10)
        location = start.headers["Location"]
        location = location if location.startswith("http") else reg.url + location
        sep = "&" if "?" in location else "?"
        assert requests.put(f"{location}{sep}digest={digest}", data=data, timeout=10).status_code == 201
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        },
        "layers": [{"mediaType": SCHEMATIC_MEDIA_TYPE, "size": len(canonical), "digest": f"sha256:{sid}"}],
    }
    put = requests.put(
        f"{reg.url}/v2/{REPO}/manifests/{sid}",
        data=json.dumps(manifest),
        headers={"Content-Type": manifest["mediaType"]},
        timeout=10,
    )
    assert put.status_code == 201
    return sid


def test_reads_what_another_writer_stored(pair: tuple[FactoryAPI, FactoryAPI], reg: LoggingRegistry) -> None:
    a, _ = pair
    canonical = b"customization:\n    extraKernelArgs:\n        - written-by-go\n"
    sid = _push_like_the_go_factory(reg, canonical)
    got = requests.get(f"{a.url}/schematics/{sid}", timeout=10)
    assert (got.status_code, got.content) == (200, canonical)
    # ...and creating the same schematic through us writes nothing new.
    before = reg.count("PUT", f"/manifests/{sid}")
    created = post(a, "customization: {extraKernelArgs: [written-by-go]}")
    assert created.status_code == 201 and created.json()["id"] == sid
    assert reg.count("PUT", f"/manifests/{sid}") == before


def test_replicas_agree_at_once(pair: tuple[FactoryAPI, FactoryAPI]) -> None:
    a, b = pair
    body = "customization:\n  extraKernelArgs: [replica-check]\n"
    sid = hashlib.sha256(b"customization:\n    extraKernelArgs:\n        - replica-check\n").hexdigest()
    # B looks first and learns "absent"; upstream would then keep answering 404 forever.
    assert requests.get(f"{b.url}/schematics/{sid}", timeout=10).status_code == 404
    assert post(a, body).json()["id"] == sid
    got = requests.get(f"{b.url}/schematics/{sid}", timeout=10)
    assert (got.status_code, got.text.splitlines()[-1]) == (200, "        - replica-check")


def test_concurrent_creates_write_once(pair: tuple[FactoryAPI, FactoryAPI], reg: LoggingRegistry) -> None:
    a, b = pair
    body = "customization:\n  extraKernelArgs: [concurrency-check]\n"
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: post(a if i % 2 else b, body), range(32)))
    assert {r.status_code for r in responses} == {201}
    answers = {r.text for r in responses}
    assert len(answers) == 1
    sid = json.loads(answers.pop())["id"]
    assert reg.count("PUT", f"/manifests/{sid}") == 1


def test_not_found_and_malformed_ids(pair: tuple[FactoryAPI, FactoryAPI]) -> None:
    a, _ = pair
    for sid in ("a" * 64, "not-an-id", "A" * 64, "0" * 63):
        got = requests.get(f"{a.url}/schematics/{sid}", timeout=10)
        assert (got.status_code, got.text) == (404, "schematic not found\n"), sid


def test_invalid_bodies_are_400_with_a_reason(pair: tuple[FactoryAPI, FactoryAPI]) -> None:
    a, _ = pair
    unknown = post(a, "something:\n")
    assert unknown.status_code == 400
    assert "line 1: field something not found in type schematic.Schematic" in unknown.text
    assert unknown.text.endswith("\n")
    for body in (
        "customization:\n  bootloader: auto\n",
        "customization:\n  meta:\n    - key: 300\n",
        "x: &a [1]\n",
    ):
        response = post(a, body)
        assert response.status_code == 400 and response.text.strip(), body
    owner = post(a, "owner: alice\n")
    assert (owner.status_code, owner.text) == (400, "owner field is only supported in Enterprise edition\n")


def test_oversized_body_is_413(pair: tuple[FactoryAPI, FactoryAPI]) -> None:
    a, _ = pair
    body = "customization:\n  extraKernelArgs:\n" + "    - x\n" * 40000  # > 256 KiB
    response = post(a, body)
    assert response.status_code == 413
    assert "262144" in response.text


def test_tampered_blob_is_refused_never_served(
    reg: LoggingRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    canonical = b"customization:\n    extraKernelArgs:\n        - tamper-check\n"
    sid = _push_like_the_go_factory(reg, canonical)
    data = reg.data_dir / "docker/registry/v2/blobs/sha256" / sid[:2] / sid / "data"
    data.write_bytes(canonical.replace(b"tamper", b"TAMPER"))
    with (
        RedisServer(tmp_path_factory.mktemp("tamper-redis")) as fresh_redis,
        api_server(tmp_path_factory.mktemp("api-t"), factory_config(fresh_redis.url, reg.host)) as api,
    ):
        got = requests.get(f"{api.url}/schematics/{sid}", timeout=10)
    assert got.status_code == 500
    assert b"TAMPER" not in got.content


def test_registry_down_is_503(redis_server: RedisServer, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with api_server(tmp_path, factory_config(redis_server.url, dead)) as api:
        response = post(api, "customization: {extraKernelArgs: [no-registry]}")
        assert response.status_code == 503
        assert f"registry {dead} is unavailable" in response.text
