"""``image-factory mirror`` end to end: the fixture release (every offered version) copied into an
empty registry, then a factory that knows only the mirror (the source registry stopped) serves the
same catalogs and builds an ISO with extensions (booted in tests/e2e/test_mirror_boot.py).

Cost (2 busy cores): about 45 s for the three mirror runs (~210 MiB copied once, then nothing), 30 s
for the factory and its ISO build; the session's fixture release is built by tests/conftest.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.config.options import ContainerSignatureOptions
from common.cosign.registry import fetch_bundle_signatures, signature_tag
from common.cosign.source import verifier_from_config
from common.registry.client import ACCEPT_MANIFESTS
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.mirror import (
    NAMESPACE,
    AuthRegistryServer,
    Mirrored,
    dotted,
    mirrored_release,
    run_mirror,
    source_config,
)
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration
REFUSED = ("siderolabs/unsigned-ext", "siderolabs/tampered-ext", "siderolabs/foreign-ext")


@pytest.fixture(scope="module")
def mirrored(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Mirrored]:
    versions = [v for v in fixture_release.versions if v not in fixture_release.broken]
    with mirrored_release(tmp_path_factory.mktemp("mirror"), registry, fixture_release, versions) as done:
        yield done


def test_list_names_every_image_without_copying(mirrored: Mirrored, fixture_release: Release) -> None:
    assert mirrored.listing.returncode == 0, mirrored.listing.stderr
    lines = mirrored.listing.stdout.splitlines()
    prefix = f"{mirrored.source}/fixture/"
    assert all(line.startswith(prefix) and "@sha256:" in line for line in lines)
    for version in mirrored.versions:
        for component in ("imager", "extensions"):
            digest = fixture_release.images[f"siderolabs/{component}:{version}"]
            assert f"{prefix}siderolabs/{component}:{version}@{digest}" in lines
    assert any(line.startswith(f"{prefix}siderolabs/installer:v1.9.5@") for line in lines)  # before 1.10
    assert any(line.startswith(f"{prefix}siderolabs/installer-base:v1.12.4@") for line in lines)
    assert any(line.startswith(f"{prefix}siderolabs/talosctl-all:v1.11.3@") for line in lines)
    assert any(line.startswith(f"{prefix}siderolabs/sbc-raspberrypi:v0.1.0@") for line in lines)
    for name in fixture_release.extensions["v1.12.4"]:
        assert any(line.startswith(f"{prefix}{name}:") for line in lines), name
    assert len(lines) == len(set(lines))  # shared images (hello-world, the overlay) listed once


def test_refuses_images_whose_signature_does_not_verify(mirrored: Mirrored) -> None:
    assert mirrored.first.returncode == 1, mirrored.first.stderr  # something was refused
    for name in REFUSED:
        refused = [line for line in mirrored.first.stderr.splitlines() if f"/{name}@sha256:" in line]
        assert refused and all("refused" in line for line in refused), name
        assert mirrored.client(name).list_tags() == []  # nothing of it reached the mirror
    assert " 3 refused, 0 failed" in mirrored.first.stderr


def test_copies_images_and_signatures_by_digest(mirrored: Mirrored, fixture_release: Release) -> None:
    assert " 0 failed" in mirrored.first.stderr and "0 copied, 0 already" not in mirrored.first.stderr
    verifier = verifier_from_config(
        ContainerSignatureOptions(
            publicKeyFile=fixture_release.public_key, trustedRootFile=fixture_release.trusted_root
        )
    )
    for version in mirrored.versions:
        digest = fixture_release.images[f"siderolabs/imager:{version}"]
        client = mirrored.client("siderolabs/imager")
        assert client.resolve(version) == digest
        assert client.resolve(signature_tag(digest)) is not None
        verifier.verify(client, digest)  # the factory's own check passes against the mirror
    overlays = mirrored.client("siderolabs/overlays")
    digest = fixture_release.images["siderolabs/overlays:v1.12.4"]
    assert fetch_bundle_signatures(overlays, digest)  # the Sigstore bundle referrer came along


def test_second_run_copies_nothing(mirrored: Mirrored) -> None:
    assert mirrored.second.returncode == 1  # the same three images are refused again
    summary = next(line for line in mirrored.second.stderr.splitlines() if "summary:" in line)
    assert " 0 copied, " in summary and "0 manifests, 0 blobs (0 B) and 0 tags copied" in summary
    assert mirrored.second.stdout == mirrored.first.stdout


@pytest.fixture(scope="module")
def mirror_factory(
    mirrored: Mirrored, fixture_release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    printed = mirrored.printed()
    assert printed["artifacts.core.registry"] == mirrored.destination.host
    assert printed["artifacts.core.namespace"] == NAMESPACE
    assert printed["containerSignature.disabled"] is False
    release, rest = mirrored.stack_arguments(fixture_release)
    with factory_stack(
        tmp_path_factory.mktemp("mirror-factory"), None, mirrored.destination, release, **rest
    ) as stack:
        assert {k: v for k, v in dotted(stack.config).items() if k in printed} == printed
        yield stack


def test_factory_on_the_mirror_serves_the_same_release(
    mirror_factory: Stack, mirrored: Mirrored, fixture_release: Release
) -> None:
    url = mirror_factory.api.url
    assert requests.get(f"{url}/versions", timeout=60).json() == mirrored.versions
    listed = mirrored.listing.stdout
    for version in mirrored.versions:
        extensions = requests.get(f"{url}/version/{version}/extensions/official", timeout=60).json()
        assert [e["name"] for e in extensions] == fixture_release.extensions[version]
        for extension in extensions:
            assert f"/{extension['name']}:" in listed and f"@{extension['digest']}" in listed
    overlays = requests.get(f"{url}/version/v1.12.4/overlays/official", timeout=60).json()
    assert [o["name"] for o in overlays] == ["rpi_generic", "revpi_generic", "rock64"]
    talosctl = requests.get(f"{url}/talosctl/v1.12.4", timeout=60).json()
    assert len(talosctl) == 9


def test_factory_on_the_mirror_builds_an_iso_with_extensions(mirror_factory: Stack) -> None:
    schematic = mirror_factory.create_schematic(
        "customization:\n  systemExtensions:\n    officialExtensions:\n"
        "      - siderolabs/test-firmware\n      - siderolabs/dummy-module\n"
    )
    response = requests.get(
        f"{mirror_factory.api.url}/image/{schematic}/v1.12.4/metal-amd64.iso", timeout=300
    )
    assert response.status_code == 200, response.text
    assert response.content[0x8001:0x8006] == b"CD001"  # ISO 9660 primary volume descriptor
    refused = requests.get(
        f"{mirror_factory.api.url}/image/"
        + mirror_factory.create_schematic(
            "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/unsigned-ext\n"
        )
        + "/v1.13.0-beta.1/metal-amd64.iso",
        timeout=300,
    )
    assert refused.status_code >= 400  # listed by the catalog, never mirrored: not built


def test_mirrors_into_a_registry_that_wants_credentials(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    """The destination wants HTTP Basic credentials (htpasswd); they come from the Docker config, as
    for the factory. Without them the copy fails, naming the images; the source is the session's."""
    config = source_config(tmp_path / "source.yaml", registry.host, fixture_release, tmp_path / "artifacts")
    with AuthRegistryServer(tmp_path / "private", "robot", "s3cret") as private:
        to = ["--to", private.host, "--namespace", NAMESPACE, "--insecure", "v1.12.4"]
        anonymous = run_mirror(config, *to, env={"DOCKER_CONFIG": str(tmp_path / "nowhere")})
        assert anonymous.returncode == 1 and "failed" in anonymous.stderr
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(b"robot:s3cret").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {private.host: {"auth": auth}}}))
        done = run_mirror(config, *to, env={"DOCKER_CONFIG": str(docker)})
        assert done.returncode == 0, done.stderr
        manifest = f"{private.url}/v2/{NAMESPACE}/siderolabs/imager/manifests/v1.12.4"
        accept = {"Accept": ACCEPT_MANIFESTS}
        assert requests.head(manifest, headers=accept, timeout=10).status_code == 401
        answer = requests.head(manifest, headers=accept, auth=("robot", "s3cret"), timeout=10)
        assert answer.headers["Docker-Content-Digest"] == fixture_release.images["siderolabs/imager:v1.12.4"]
