"""Catalog and talosctl routes through gunicorn, against the fixture release (upstream's meta and
talosctl integration tests, adapted to the fixture's versions and names)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.config.options import RepositoryOptions
from common.cosign.registry import SignatureLayer, push_legacy_signatures, simple_signing_payload
from common.registry.client import RegistryClient
from devstack.release import content
from devstack.release.oci import Image, layer, push_index
from devstack.release.release import Release, factory_overrides, sign, signing_key
from devstack.services import RegistryServer
from tests.support.factory import FactoryAPI, api_server, factory_config

pytestmark = pytest.mark.integration
EXTERNAL = "https://factory.example.com/"


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[FactoryAPI]:
    state = tmp_path_factory.mktemp("catalog-api")
    overrides = {
        **factory_overrides(fixture_release),
        "artifacts.storageDir": str(state / "artifacts"),
        "http.externalURL": EXTERNAL,
    }
    with api_server(state, factory_config(redis_url, registry.host, **overrides)) as server:
        yield server


def get(api: FactoryAPI, path: str) -> requests.Response:
    return requests.get(f"{api.url}{path}", timeout=60)


def test_versions(api: FactoryAPI, fixture_release: Release) -> None:
    response = get(api, "/versions")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.text.endswith("\n")
    assert response.json() == [v for v in fixture_release.versions if v not in fixture_release.broken]
    broken = get(api, "/versions?broken=true")
    assert broken.json() == fixture_release.broken == ["v1.11.2"]


def test_official_extensions(api: FactoryAPI, fixture_release: Release) -> None:
    for version in ("v1.9.5", "1.12.4", "v1.13.0-beta.1"):
        response = get(api, f"/version/{version}/extensions/official")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        items = response.json()
        vtag = version if version.startswith("v") else "v" + version
        assert [i["name"] for i in items] == fixture_release.extensions[vtag]
        for item in items:
            assert set(item) == {"name", "ref", "digest", "author", "description"}
            assert item["ref"].startswith(f"{fixture_release.registry}/{item['name']}:")
            assert item["digest"].startswith("sha256:")
    ucode = next(
        i for i in get(api, "/version/v1.9.5/extensions/official").json() if "amd-ucode" in i["name"]
    )
    assert ucode["ref"] == f"{fixture_release.registry}/siderolabs/amd-ucode:20250101-v1.9.5"
    assert ucode["author"] == "Sidero Labs"


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/version/v1.11.2/extensions/official", 404, "version 1.11.2 is not available\n"),  # broken
        ("/version/v1.12.0-rc.1/extensions/official", 404, "version 1.12.0-rc.1 is not available\n"),
        ("/version/v1.5.0-alpha.0/overlays/official", 404, "version 1.5.0-alpha.0 is not available\n"),
        ("/version/v1.12/extensions/official", 400, None),  # not semver: a 4xx saying so (upstream: 500)
        ("/talosctl/v1.10.7/talosctl-linux-amd64", 404, "version 1.10.7 is not available\n"),
        ("/talosctl/v1.1.0/talosctl-linux-amd64", 404, "version 1.1.0 is not available\n"),
        ("/talosctl/v1.12.4/talosctl-plan9-mips", 404, None),
        ("/talosctl/v1.12.4/..", 404, None),
    ],
)
def test_errors(api: FactoryAPI, path: str, status: int, body: str | None) -> None:
    response = get(api, path)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    if body is not None:
        assert response.text == body
    else:
        assert response.text.strip()


def test_official_overlays(api: FactoryAPI) -> None:
    before = get(api, "/version/v1.6.7/overlays/official")  # overlays start with Talos 1.7
    assert (before.status_code, before.text) == (200, "[]\n")
    items = get(api, "/version/v1.7.6/overlays/official").json()
    assert [i["name"] for i in items] == ["rpi_generic", "revpi_generic", "rock64"]
    assert items[2]["ref"] == "ghcr.io/siderolabs/sbc-rockchip:v0.1.0"
    assert items[0]["image"] == "siderolabs/sbc-raspberrypi"
    assert items[0]["ref"] == "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0"


def test_talosctl(api: FactoryAPI) -> None:
    listing = get(api, "/talosctl/1.11.3")
    assert listing.headers["Content-Type"] == "application/json"
    urls = listing.json()
    assert urls == sorted(urls) and len(urls) == 9
    assert urls[0] == f"{EXTERNAL}talosctl/v1.11.3/talosctl-darwin-amd64"
    assert get(api, "/talosctl/v1.10.7").json() == []  # talosctl-all starts with 1.11
    for url in urls:
        name = url.rsplit("/", 1)[1]
        response = get(api, f"/talosctl/v1.11.3/{name}")
        assert response.status_code == 200, name
        assert response.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert b"talosctl v1.11.3" in response.content
    head = requests.head(f"{api.url}/talosctl/v1.11.3/talosctl-linux-amd64", timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) > 0 and not head.content


def test_unsigned_catalog_reaches_the_client_as_a_clear_5xx(
    registry: RegistryServer, redis_url: str, fixture_release: Release, tmp_path: Path
) -> None:
    """A release whose extensions catalog was never signed (and one whose signature was forged)."""
    namespace = "unsigned-catalog"
    for repository in ("siderolabs/imager", "siderolabs/overlays"):
        copy_image(registry, repository, "v1.12.4", namespace)
    target = RegistryClient(
        RepositoryOptions(registry.host, namespace, "siderolabs/extensions", insecure=True)
    )
    catalog = push_index(target, [Image([layer(content.extensions_catalog([]))], "amd64")], "v1.12.4")
    overrides = {
        **factory_overrides(fixture_release),
        "artifacts.core.namespace": namespace,
        "artifacts.storageDir": str(tmp_path / "artifacts"),
    }
    with api_server(tmp_path, factory_config(redis_url, registry.host, **overrides)) as server:
        response = get(server, "/version/v1.12.4/extensions/official")
        assert response.status_code == 502, response.text
        assert f"{registry.host}/{namespace}/siderolabs/extensions@{catalog.digest}" in response.text
        assert "is not signed" in response.text
        # the overlays catalog was copied with its signature and keeps working
        assert get(server, "/version/v1.12.4/overlays/official").status_code == 200
    # now signed, but by a key nobody trusts
    payload = simple_signing_payload("ghcr.io/siderolabs/extensions", catalog.digest)
    stranger = signing_key(b"a stranger")
    push_legacy_signatures(target, catalog.digest, [SignatureLayer(payload, sign(stranger, payload))])
    (tmp_path / "again").mkdir()
    with api_server(tmp_path / "again", factory_config(redis_url, registry.host, **overrides)) as server:
        response = get(server, "/version/v1.12.4/extensions/official")
        assert response.status_code == 502
        assert "does not verify with the configured public key" in response.text


def copy_image(registry: RegistryServer, repository: str, tag: str, namespace: str) -> None:
    """Copies an index, its platform manifests, their blobs and its .sig tag between namespaces."""
    source = RegistryClient(RepositoryOptions(registry.host, "fixture", repository, insecure=True))
    target = RegistryClient(RepositoryOptions(registry.host, namespace, repository, insecure=True))

    def copy(reference: str) -> str:
        manifest = source.get_manifest(reference)
        assert manifest is not None, reference
        document = manifest.document
        for child in document.get("manifests", []):
            copy(child["digest"])
        for descriptor in [document.get("config"), *document.get("layers", [])]:
            if descriptor:
                data = source.get_blob(descriptor["digest"], 1 << 30)
                assert data is not None
                target.push_blob(data, descriptor["digest"])
        target.put_manifest_bytes(reference, manifest.body, manifest.media_type)
        return manifest.digest

    digest = copy(tag)
    signature = "sha256-" + digest.split(":")[1] + ".sig"
    copy(signature)
    assert json.loads(target.get_manifest(tag).body) == json.loads(source.get_manifest(tag).body)  # type: ignore[union-attr]
