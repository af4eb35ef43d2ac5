"""The ``/v2`` installer frontend through real processes: two gunicorn APIs, two Celery workers, a
private Redis, the session's registry and the fixture release; pulled with Debian's skopeo and podman.

One schematic per test (its own kernel argument), so every test starts from unbuilt installers and
an untagged internal repository (``<registry>/siderolabs/<image>/<schematic>``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from common.config.options import RepositoryOptions
from common.cosign.registry import SignatureLayer, push_legacy_signatures, signature_tag
from common.registry.client import RegistryClient
from devstack.release.release import Publisher, Release, signing_key
from devstack.services import RedisServer, RegistryServer
from tests.support.oci_tools import (
    MANIFEST_ACCEPT,
    b64,
    check_oci_layout,
    get_manifest,
    mount_copy,
    put_manifest,
    verify_ecdsa,
)
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
PULL_WAIT = 600
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
INTERNAL_NAMESPACE = "siderolabs"  # artifacts.installer.internal's namespace (devstack.factory)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("registry"), redis_server, registry, fixture_release, apis=2, workers=2
    ) as s:
        yield s


def host(stack: Stack, api: int = 0) -> str:
    return stack.apis[api].url.removeprefix("http://")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=PULL_WAIT)


def schematic(stack: Stack, tag: str, extra: str = "") -> str:
    return stack.create_schematic(f"customization:\n  extraKernelArgs:\n    - test=registry-{tag}\n{extra}")


def v2(stack: Stack, path: str, api: int = 0, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", PULL_WAIT)
    kwargs.setdefault("allow_redirects", False)
    headers = {"Accept": MANIFEST_ACCEPT, **kwargs.pop("headers", {})}
    return requests.request(
        kwargs.pop("method", "GET"), f"{stack.apis[api].url}/v2/{path}", headers=headers, **kwargs
    )


def pull_index(
    stack: Stack, sid: str, ref: str = VERSION, image: str = "metal-installer", api: int = 0
) -> requests.Response:
    """The manifest request a client makes for ``<image>/<sid>:<ref>``, checked to be a digest-true index."""
    response = v2(stack, f"{image}/{sid}/manifests/{ref}", api)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.headers["Docker-Content-Digest"] == sha256(response.content)
    assert int(response.headers["Content-Length"]) == len(response.content)
    return response


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def platforms(index: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]


def internal_repository(image: str, sid: str) -> str:
    return f"{INTERNAL_NAMESPACE}/{image}/{sid}"


def internal_client(registry: RegistryServer, image: str, sid: str) -> RegistryClient:
    return RegistryClient(
        RepositoryOptions(registry.host, INTERNAL_NAMESPACE, f"{image}/{sid}", insecure=True)
    )


def installer_keys(
    stack: Stack, sid: str, version: str = VERSION, image: str = "metal-installer"
) -> dict[str, str]:
    """Build keys of ``<image>-<arch>.tar`` (the ``/image`` path of that installer) for the schematic,
    from the build records in Redis."""
    keys: dict[str, str] = {}
    for raw in stack.redis.scan_iter("if:build:rec:*"):
        key = raw.decode().removeprefix("if:build:rec:")
        request = json.loads(stack.record(key).get("request") or "{}")
        if request.get("schematic") != sid or request.get("version") != version:
            continue
        for arch in ("amd64", "arm64"):
            if request.get("path") == f"{image}-{arch}.tar":
                keys[arch] = key
    return keys


def legacy_signature(registry: RegistryServer, image: str, sid: str, digest: str) -> tuple[str, bytes, bytes]:
    """``(manifest digest, payload, signature)`` of ``sha256-<hex>.sig`` in the internal repository,
    read with plain HTTP (not the product's client)."""
    repository = internal_repository(image, sid)
    body, media_type, manifest_digest = get_manifest(registry.host, repository, signature_tag(digest))
    document = json.loads(body)
    assert media_type == "application/vnd.oci.image.manifest.v1+json", media_type
    (layer,) = document["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING
    blob = requests.get(f"http://{registry.host}/v2/{repository}/blobs/{layer['digest']}", timeout=30)
    assert blob.status_code == 200 and sha256(blob.content) == layer["digest"]
    return manifest_digest, blob.content, b64(layer["annotations"][SIGNATURE_ANNOTATION])


def check_payload(payload: bytes, registry: RegistryServer, image: str, sid: str, digest: str) -> None:
    critical = json.loads(payload)["critical"]
    assert critical["image"]["docker-manifest-digest"] == digest
    assert critical["identity"]["docker-reference"] == f"{registry.host}/{internal_repository(image, sid)}"
    assert critical["type"] == "cosign container image signature"


def served_key(stack: Stack) -> bytes:
    pem = requests.get(f"{stack.api.url}/oci/cosign/signing-key.pub", timeout=10)
    assert pem.status_code == 200 and b"BEGIN PUBLIC KEY" in pem.content
    return pem.content


def registry_error(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    (error,) = body["errors"]
    assert set(error) == {"code", "message", "detail"}, error
    return dict(error)


# --- 1. real clients ---------------------------------------------------------------------------------


def test_skopeo_inspects_a_multi_arch_index(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=registry-index\n")
    ref = f"docker://{host(stack)}/metal-installer/{sid}:{VERSION}"
    found = skopeo("inspect", "--tls-verify=false", "--raw", ref)
    assert found.returncode == 0, found.stderr
    index = json.loads(found.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert platforms(index) == [("linux", "amd64"), ("linux", "arm64")]
    base = requests.get(f"{stack.api.url}/v2/", timeout=10)
    assert base.status_code == 200 and base.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_skopeo_copies_every_arch_into_a_verified_oci_layout(stack: Stack, tmp_path: Path) -> None:
    sid = schematic(stack, "layout")
    ref = f"docker://{host(stack)}/metal-installer/{sid}:{VERSION}"
    copied = skopeo(
        "copy", "--all", "--preserve-digests", "--src-tls-verify=false", ref, f"oci:{tmp_path}/layout:x"
    )
    assert copied.returncode == 0, copied.stderr
    layout = check_oci_layout(tmp_path / "layout")
    (top,) = layout["manifests"]
    assert top["annotations"]["org.opencontainers.image.ref.name"] == "x"
    # the layout holds the very index the factory published (digests preserved), both arches in it
    published = pull_index(stack, sid)
    assert top["digest"] == published.headers["Docker-Content-Digest"]
    index = json.loads((tmp_path / "layout/blobs/sha256" / top["digest"].split(":")[1]).read_bytes())
    assert platforms(index) == [("linux", "amd64"), ("linux", "arm64")]
    for entry in index["manifests"]:
        manifest = json.loads((tmp_path / "layout/blobs/sha256" / entry["digest"].split(":")[1]).read_bytes())
        assert manifest["mediaType"] == DOCKER_MANIFEST and len(manifest["layers"]) >= 2
        config = json.loads(
            (tmp_path / "layout/blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes()
        )
        assert config["architecture"] == entry["platform"]["architecture"] and config["os"] == "linux"
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])


def _podman(root: Path, runroot: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's podman with storage of its own (vfs: no mounts; podman wants a runroot under 50 chars)."""
    cmd = ["podman", "--root", str(root / "root"), "--runroot", runroot, "--storage-driver", "vfs"]
    cmd += ["--events-backend", "file", "--tmpdir", str(root / "tmp"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=PULL_WAIT, check=False)


def test_podman_pulls_the_installer_for_each_arch(stack: Stack, tmp_path: Path) -> None:
    sid = schematic(stack, "podman")
    image = f"{host(stack, 1)}/metal-installer/{sid}:{VERSION}"
    (tmp_path / "tmp").mkdir()
    with tempfile.TemporaryDirectory(prefix="podman-", dir="/tmp") as runroot:
        _podman_pulls(stack, sid, image, tmp_path, runroot)


def _podman_pulls(stack: Stack, sid: str, image: str, tmp_path: Path, runroot: str) -> None:
    pulled = _podman(tmp_path, runroot, "pull", "--tls-verify=false", image)
    assert pulled.returncode == 0, pulled.stderr
    inspected = _podman(tmp_path, runroot, "image", "inspect", image)
    assert inspected.returncode == 0, inspected.stderr
    (info,) = json.loads(inspected.stdout)
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    index = pull_index(stack, sid)
    assert info["Digest"] == index.headers["Docker-Content-Digest"], info["Digest"]  # pulled by the index
    # the other arch of the same index, by digest through the other API
    arm = f"{host(stack)}/metal-installer/{sid}@{index.headers['Docker-Content-Digest']}"
    pulled = _podman(tmp_path, runroot, "pull", "--tls-verify=false", "--arch", "arm64", arm)
    assert pulled.returncode == 0, pulled.stderr
    inspected = _podman(tmp_path, runroot, "image", "inspect", pulled.stdout.strip().splitlines()[-1])
    assert inspected.returncode == 0, inspected.stderr
    (info,) = json.loads(inspected.stdout)
    assert (info["Os"], info["Architecture"]) == ("linux", "arm64")


# --- 2. signatures -----------------------------------------------------------------------------------


def test_index_signature_verifies_and_a_forged_one_is_published_again(
    stack: Stack, registry: RegistryServer
) -> None:
    sid = schematic(stack, "signature")
    first = pull_index(stack, sid, api=0)
    digest = first.headers["Docker-Content-Digest"]
    keys = installer_keys(stack, sid)
    assert set(keys) == {"amd64", "arm64"} and all(stack.runs(k) == 1 for k in keys.values())
    pem = served_key(stack)

    # cosign's legacy layout in artifacts.installer.internal, verifiable with the served key
    sig_digest, payload, signature = legacy_signature(registry, "metal-installer", sid, digest)
    check_payload(payload, registry, "metal-installer", sid, digest)
    assert verify_ecdsa(pem, payload, signature)

    # the same signature attached as an OCI 1.1 referrer, listed through the factory
    referrers = v2(stack, f"metal-installer/{sid}/referrers/{digest}")
    assert referrers.status_code == 200 and referrers.headers["Content-Type"] == OCI_INDEX
    listed = [m for m in referrers.json()["manifests"] if m.get("artifactType") == COSIGN_SIG_ARTIFACT]
    assert len(listed) == 1, referrers.json()
    filtered = v2(
        stack, f"metal-installer/{sid}/referrers/{digest}", params={"artifactType": COSIGN_SIG_ARTIFACT}
    )
    assert filtered.status_code == 200 and filtered.json()["manifests"] == listed
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    referrer = json.loads(
        get_manifest(registry.host, internal_repository("metal-installer", sid), listed[0]["digest"])[0]
    )
    assert referrer["subject"]["digest"] == digest
    (layer,) = referrer["layers"]
    assert verify_ecdsa(pem, payload, b64(layer["annotations"][SIGNATURE_ANNOTATION]))

    # someone without the factory's key replaces the .sig
    foreign = ec.generate_private_key(ec.SECP256R1())
    forged = foreign.sign(payload, ec.ECDSA(hashes.SHA256()))
    client = internal_client(registry, "metal-installer", sid)
    forged_digest = push_legacy_signatures(client, digest, [SignatureLayer(payload, forged)])
    assert legacy_signature(registry, "metal-installer", sid, digest)[0] == forged_digest
    assert not verify_ecdsa(pem, payload, forged)

    # the other API (no 30 s verification memo for this tag) must not forward the forged tag:
    # it publishes the index again (from the cached installers: no build) and signs it anew
    log = stack.root / "api1" / "api.log"
    again = pull_index(stack, sid, api=1)
    assert again.headers["Docker-Content-Digest"] == digest and again.content == first.content
    resigned_digest, payload2, signature2 = legacy_signature(registry, "metal-installer", sid, digest)
    assert resigned_digest not in (forged_digest, sig_digest)
    check_payload(payload2, registry, "metal-installer", sid, digest)
    assert verify_ecdsa(pem, payload2, signature2)
    assert "publishing it again" in log.read_text()
    assert all(stack.runs(k) == 1 for k in keys.values())
    # skopeo still resolves the tag to the same digest
    found = skopeo(
        "inspect", "--tls-verify=false", "--raw", f"docker://{host(stack, 1)}/metal-installer/{sid}:{VERSION}"
    )
    assert found.returncode == 0 and sha256(found.stdout.encode()) == digest, found.stderr


def test_signature_tag_is_reachable_through_the_factory(stack: Stack, registry: RegistryServer) -> None:
    """``cosign verify --key signing-key.pub <factory>/metal-installer/<id>:<v>`` (upstream's README)
    reads ``<factory>/metal-installer/<id>:sha256-<hex>.sig``: a tag that is no version is forwarded
    to the internal repository as is, as upstream does (``!strings.HasPrefix(versionTag, "v")``)."""
    sid = schematic(stack, "sig-through")
    digest = pull_index(stack, sid).headers["Docker-Content-Digest"]
    via_factory = v2(stack, f"metal-installer/{sid}/manifests/{signature_tag(digest)}")
    assert via_factory.status_code == 200, via_factory.text
    body, _, sig_digest = get_manifest(
        registry.host, internal_repository("metal-installer", sid), signature_tag(digest)
    )
    assert via_factory.content == body and via_factory.headers["Docker-Content-Digest"] == sig_digest
    (layer,) = via_factory.json()["layers"]
    blob = v2(stack, f"metal-installer/{sid}/blobs/{layer['digest']}")
    assert blob.status_code == 200 and sha256(blob.content) == layer["digest"]
    assert verify_ecdsa(served_key(stack), blob.content, b64(layer["annotations"][SIGNATURE_ANNOTATION]))


# --- 3. concurrency ----------------------------------------------------------------------------------


def test_twenty_concurrent_pullers_share_one_build_per_arch(stack: Stack) -> None:
    sid = schematic(stack, "concurrent")
    pullers = 20
    barrier = threading.Barrier(pullers)

    def pull(i: int) -> tuple[int, str | None, str]:
        barrier.wait(timeout=30)
        response = v2(
            stack, f"metal-installer/{sid}/manifests/{VERSION}", api=i % 2, headers={"Accept": OCI_INDEX}
        )
        return response.status_code, response.headers.get("Docker-Content-Digest"), response.text[:300]

    started = time.monotonic()
    with ThreadPoolExecutor(pullers) as pool:
        results = list(pool.map(pull, range(pullers)))
    cold = time.monotonic() - started
    assert all(status == 200 for status, _, _ in results), results
    digests = {digest for _, digest, _ in results}
    assert len(digests) == 1 and None not in digests, digests
    keys = installer_keys(stack, sid)
    assert set(keys) == {"amd64", "arm64"}, keys
    assert {arch: stack.runs(key) for arch, key in keys.items()} == {"amd64": 1, "arm64": 1}
    # the keys are the ETags of the same installers under /image (cached now: no build)
    for arch, key in keys.items():
        head = requests.head(f"{stack.api.url}/image/{sid}/{VERSION}/metal-installer-{arch}.tar", timeout=60)
        assert head.status_code == 200 and head.headers["ETag"].strip('"') == key
    # a second pull is a verified tag lookup, no build and no publication
    started = time.monotonic()
    found = skopeo(
        "inspect", "--tls-verify=false", "--raw", f"docker://{host(stack, 1)}/metal-installer/{sid}:{VERSION}"
    )
    warm = time.monotonic() - started
    assert found.returncode == 0, found.stderr
    assert sha256(found.stdout.encode()) in digests
    assert warm < 1.0, f"second pull took {warm:.2f}s (cold: {cold:.1f}s)"
    assert {arch: stack.runs(key) for arch, key in keys.items()} == {"amd64": 1, "arm64": 1}


# --- 4. references, names, errors, forwarding modes -------------------------------------------------


def test_latest_is_the_newest_stable_version(stack: Stack) -> None:
    versions = requests.get(f"{stack.api.url}/versions", timeout=30).json()
    stable = [v for v in versions if "-" not in v]
    newest = max(stable, key=lambda v: tuple(int(x) for x in v.removeprefix("v").split(".")))
    assert newest == VERSION and any("-" in v for v in versions), versions  # a pre-release is newer
    sid = schematic(stack, "latest")
    latest = pull_index(stack, sid, "latest")
    pinned = pull_index(stack, sid, newest, api=1)
    assert latest.headers["Docker-Content-Digest"] == pinned.headers["Docker-Content-Digest"]
    assert all(stack.runs(k) == 1 for k in installer_keys(stack, sid, newest).values())


def test_legacy_installer_name_serves_the_same_images(stack: Stack) -> None:
    sid = schematic(stack, "legacy")
    legacy = pull_index(stack, sid, image="installer")
    assert platforms(json.loads(legacy.content)) == [("linux", "amd64"), ("linux", "arm64")]
    found = skopeo(
        "inspect", "--tls-verify=false", "--no-tags", f"docker://{host(stack)}/installer/{sid}:{VERSION}"
    )
    assert found.returncode == 0 and json.loads(found.stdout)["Architecture"] == "amd64", found.stderr
    keys = installer_keys(stack, sid, image="installer")
    assert set(keys) == {"amd64", "arm64"} and all(stack.runs(k) == 1 for k in keys.values())
    # metal-installer is the same installer (metal platform, same profile, same build keys): the same
    # index, published to its own repository, without a new build
    runs = stack.total_runs()
    metal = pull_index(stack, sid, image="metal-installer", api=1)
    assert metal.headers["Docker-Content-Digest"] == legacy.headers["Docker-Content-Digest"]
    assert stack.total_runs() == runs


def test_digest_references_are_forwarded_as_is(stack: Stack) -> None:
    sid = schematic(stack, "digest")
    index = pull_index(stack, sid)
    by_digest = pull_index(stack, sid, index.headers["Docker-Content-Digest"], api=1)
    assert by_digest.content == index.content
    for entry in json.loads(index.content)["manifests"]:
        manifest = v2(stack, f"metal-installer/{sid}/manifests/{entry['digest']}")
        assert manifest.status_code == 200 and manifest.headers["Content-Type"] == DOCKER_MANIFEST
        assert manifest.headers["Docker-Content-Digest"] == entry["digest"] == sha256(manifest.content)
    runs = stack.total_runs()
    missing = v2(stack, f"metal-installer/{sid}/manifests/sha256:{'0' * 64}")
    assert missing.status_code == 404 and registry_error(missing)["code"] == "MANIFEST_UNKNOWN"
    assert stack.total_runs() == runs  # a digest never builds anything


def test_errors_are_registry_json(stack: Stack) -> None:
    sid = schematic(stack, "errors")
    unknown = "f" * 64
    for path in (
        f"metal-installer/{unknown}/manifests/{VERSION}",
        f"metal-installer/{unknown}/blobs/sha256:{'0' * 64}",
        f"foo-bar/{unknown}/manifests/{VERSION}",  # the schematic is checked first, as upstream
    ):
        response = v2(stack, path)
        assert response.status_code == 404, (path, response.text)
        error = registry_error(response)
        assert error["code"] == "NAME_UNKNOWN" and unknown in error["message"], error
    invalid = v2(stack, f"foo-bar/{sid}/manifests/{VERSION}")
    assert invalid.status_code == 400
    assert registry_error(invalid) == {
        "code": "NAME_INVALID",
        "message": "invalid image: foo-bar",
        "detail": None,
    }
    secureboot = v2(stack, f"metal-installer-secureboot/{sid}/manifests/{VERSION}", api=1)
    assert (
        secureboot.status_code == 400 and "secure boot is disabled" in registry_error(secureboot)["message"]
    )
    put = v2(stack, f"metal-installer/{sid}/manifests/{VERSION}", method="PUT", data=b"{}")
    assert put.status_code == 405 and registry_error(put)["code"] == "UNSUPPORTED"
    assert installer_keys(stack, sid) == {}  # no error path queued a build


def test_proxy_mode_serves_manifests_and_blobs_with_their_digests(stack: Stack) -> None:
    sid = schematic(stack, "proxy")
    index = pull_index(stack, sid)  # served by the factory itself: 200, not a redirect
    head = v2(stack, f"metal-installer/{sid}/manifests/{VERSION}", method="HEAD", api=1)
    assert (
        head.status_code == 200
        and head.headers["Docker-Content-Digest"] == index.headers["Docker-Content-Digest"]
    )
    assert head.content == b"" and int(head.headers["Content-Length"]) == len(index.content)
    amd64 = json.loads(index.content)["manifests"][0]
    manifest = json.loads(v2(stack, f"metal-installer/{sid}/manifests/{amd64['digest']}").content)
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = v2(stack, f"metal-installer/{sid}/blobs/{descriptor['digest']}", stream=True)
        assert blob.status_code == 200, blob.text
        assert blob.headers["Docker-Content-Digest"] == descriptor["digest"]
        digest = hashlib.sha256()
        size = 0
        for chunk in blob.iter_content(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        assert ("sha256:" + digest.hexdigest(), size) == (descriptor["digest"], descriptor["size"])
    last = manifest["layers"][-1]
    ranged = v2(stack, f"metal-installer/{sid}/blobs/{last['digest']}", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10, ranged.status_code
    assert ranged.headers["Content-Range"] == f"bytes 0-9/{last['size']}"
    assert ranged.content[:2] == b"\x1f\x8b"  # the gzip'd layer itself


def test_redirect_mode_sends_clients_to_the_external_registry(
    stack: Stack, registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    sid = schematic(stack, "redirect")
    overrides: dict[str, Any] = {
        "artifacts.installer.external.registry": registry.host,
        "artifacts.installer.external.namespace": INTERNAL_NAMESPACE,
        "artifacts.installer.external.insecure": True,
    }
    with factory_stack(tmp_path, None, registry, fixture_release, apis=1, workers=1, **overrides) as other:
        response = v2(other, f"metal-installer/{sid}/manifests/{VERSION}")
        assert response.status_code == 307, response.text
        location = response.headers["Location"]
        prefix = f"http://{registry.host}/v2/{INTERNAL_NAMESPACE}/metal-installer/{sid}/manifests/sha256:"
        assert location.startswith(prefix), location
        followed = requests.get(location, headers={"Accept": OCI_INDEX}, timeout=30)
        assert followed.status_code == 200 and sha256(followed.content) == location.rsplit("/", 1)[1]
        assert platforms(followed.json()) == [("linux", "amd64"), ("linux", "arm64")]
        blob_digest = json.loads(
            requests.get(
                f"http://{registry.host}/v2/{internal_repository('metal-installer', sid)}/manifests/"
                + followed.json()["manifests"][0]["digest"],
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=30,
            ).content
        )["config"]["digest"]
        blob = v2(other, f"metal-installer/{sid}/blobs/{blob_digest}")
        assert blob.status_code == 307
        assert blob.headers["Location"] == (
            f"http://{registry.host}/v2/{internal_repository('metal-installer', sid)}/blobs/{blob_digest}"
        )
        found = skopeo(
            "inspect",
            "--tls-verify=false",
            "--raw",
            f"docker://{other.api.url.removeprefix('http://')}/metal-installer/{sid}:{VERSION}",
        )
        assert found.returncode == 0, found.stderr
        assert sha256(found.stdout.encode()) == location.rsplit("/", 1)[1]
        assert set(installer_keys(other, sid)) == {"amd64", "arm64"} and other.total_runs() == 2
    # the tag the redirect-mode factory published (signed with the same key) is what the proxy-mode
    # factory serves too: verified, not rebuilt
    runs = stack.total_runs()
    assert pull_index(stack, sid).headers["Docker-Content-Digest"] == location.rsplit("/", 1)[1]
    assert stack.total_runs() == runs


# --- 5. a release without arm64 ------------------------------------------------------------------------


def _amd64_only_release(registry: RegistryServer, fixture_release: Release) -> Release:
    """A copy of the fixture's v1.12.4 in a fresh namespace whose installer-base index lists only
    linux/amd64 (re-signed with the release key); everything else is the fixture's, by mounts."""
    namespace = f"amd64-only-{uuid.uuid4().hex[:8]}"
    source = fixture_release.namespace
    for repository in ("siderolabs/imager", "siderolabs/extensions", "siderolabs/overlays"):
        digest = mount_copy(registry.host, f"{source}/{repository}", f"{namespace}/{repository}", VERSION)
        sig = signature_tag(digest)
        mount_copy(registry.host, f"{source}/{repository}", f"{namespace}/{repository}", sig)
    base = "siderolabs/installer-base"
    body, media_type, _ = get_manifest(registry.host, f"{source}/{base}", VERSION)
    index = json.loads(body)
    index["manifests"] = [m for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    assert len(index["manifests"]) == 1
    (amd64,) = index["manifests"]
    mount_copy(registry.host, f"{source}/{base}", f"{namespace}/{base}", amd64["digest"])
    new_body = json.dumps(index, separators=(",", ":")).encode()
    digest = put_manifest(registry.host, f"{namespace}/{base}", VERSION, new_body, media_type)
    Publisher(registry.host, namespace, signing_key(), None).sign(base, digest)
    return dataclasses.replace(fixture_release, namespace=namespace)


def test_a_release_without_arm64_gives_an_amd64_only_index(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    release = _amd64_only_release(registry, fixture_release)
    with factory_stack(tmp_path, None, registry, release, apis=1, workers=1) as small:
        sid = schematic(small, f"amd64-only-{release.namespace}")
        response = v2(small, f"metal-installer/{sid}/manifests/{VERSION}")
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == sha256(response.content)
        assert platforms(response.json()) == [("linux", "amd64")]
        found = skopeo(
            "inspect",
            "--tls-verify=false",
            "--no-tags",  # the factory serves no tags/list for installer repositories
            f"docker://{small.api.url.removeprefix('http://')}/metal-installer/{sid}:{VERSION}",
        )
        assert found.returncode == 0 and json.loads(found.stdout)["Architecture"] == "amd64", found.stderr
        keys = installer_keys(small, sid)
        assert set(keys) == {"amd64"} and small.runs(keys["amd64"]) == 1 and small.total_runs() == 1
        # the missing arch is a 404 on /image, not a 500
        arm = requests.get(f"{small.api.url}/image/{sid}/{VERSION}/metal-installer-arm64.tar", timeout=60)
        assert arm.status_code == 404 and "no linux/arm64 variant" in arm.text, arm.text


def test_plain_skopeo_inspect_lists_the_published_tags(stack: Stack) -> None:
    """Without ``--raw`` skopeo also lists the repository's tags (``…/tags/list``)."""
    sid = schematic(stack, "tags-list")
    found = skopeo("inspect", "--tls-verify=false", f"docker://{host(stack)}/metal-installer/{sid}:{VERSION}")
    assert found.returncode == 0, found.stderr
    inspected = json.loads(found.stdout)
    assert VERSION in inspected["RepoTags"]
    assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"
    unknown = v2(stack, f"metal-installer/{'0' * 64}/tags/list")
    assert unknown.status_code == 404 and registry_error(unknown)["code"] == "NAME_UNKNOWN"


def test_the_factory_proxies_source_images_with_their_signatures(
    stack: Stack, fixture_release: Release, tmp_path: Path
) -> None:
    """The same dispatcher serves ``/v2/siderolabs/…`` from ``artifacts.core`` (here the fixture
    release's namespace): the imager index byte for byte, an extension image and its cosign ``.sig``."""
    backing = f"{fixture_release.registry}/{fixture_release.namespace}"
    ours = skopeo(
        "inspect", "--tls-verify=false", "--raw", f"docker://{host(stack)}/siderolabs/imager:{VERSION}"
    )
    theirs = skopeo(
        "inspect", "--tls-verify=false", "--raw", f"docker://{backing}/siderolabs/imager:{VERSION}"
    )
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    assert ours.stdout == theirs.stdout and json.loads(ours.stdout)["manifests"]
    ((tag, digest),) = [
        (key.partition(":")[2], found)
        for key, found in fixture_release.images.items()
        if key.startswith("siderolabs/dummy-module:") and key.endswith(VERSION)
    ]
    copied = skopeo(
        "copy", "--all", "--src-tls-verify=false",
        f"docker://{host(stack)}/siderolabs/dummy-module:{tag}", f"oci:{tmp_path / 'ext'}:x",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    signature = skopeo(
        "inspect",
        "--tls-verify=false",
        "--raw",
        f"docker://{host(stack)}/siderolabs/dummy-module:{signature_tag(digest)}",
    )
    assert signature.returncode == 0, signature.stderr
    layers = json.loads(signature.stdout)["layers"]
    assert layers and all("dev.cosignproject.cosign/signature" in layer["annotations"] for layer in layers)
    payload = json.loads(
        requests.get(
            f"http://{backing.split('/')[0]}/v2/{fixture_release.namespace}/siderolabs/dummy-module/blobs/{layers[0]['digest']}",
            timeout=30,
        ).content
    )
    assert payload["critical"]["image"]["docker-manifest-digest"] == digest
