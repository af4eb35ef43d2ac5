"""Pure parts of the source-image proxy: routes, repository mapping, upstream URLs, referrers filter."""

from __future__ import annotations

import json

import pytest
from flask import Flask, request

from api.registry import sources
from api.registry.errors import RegistryError
from common.config import Config
from common.config.options import CoreOptions

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("siderolabs/imager/manifests/v1.12.4", ("imager", "manifests", "v1.12.4")),
        ("siderolabs/installer-base/manifests/" + DIGEST, ("installer-base", "manifests", DIGEST)),
        ("siderolabs/dummy-module/manifests/sha256-" + "ab" * 32 + ".sig", None),
        ("siderolabs/talosctl-all/blobs/" + DIGEST, ("talosctl-all", "blobs", DIGEST)),
        ("siderolabs/extensions/tags/list", ("extensions", "tags", "list")),
        ("siderolabs/overlays/referrers/" + DIGEST, ("overlays", "referrers", DIGEST)),
        ("siderolabs/sbc.raspberry_pi-4/manifests/v0.1.0", ("sbc.raspberry_pi-4", "manifests", "v0.1.0")),
    ],
)
def test_parse_route(path: str, route: tuple[str, str, str] | None) -> None:
    parsed = sources.parse_route(path.split("/"))
    if route is None:  # cosign's legacy signature tag is a plain tag
        route = ("dummy-module", "manifests", path.rsplit("/", 1)[1])
    assert (parsed.image, parsed.resource, parsed.reference) == route


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("siderolabs/installer/tags/v1", "NAME_UNKNOWN"),
        ("siderolabs/installer/uploads/x", "NAME_UNKNOWN"),
        ("siderolabs/Installer/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/-x/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/a--b/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/a/b/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/imager/manifests", "NAME_UNKNOWN"),
        ("other/imager/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/imager/manifests/-v1", "MANIFEST_UNKNOWN"),
        ("siderolabs/imager/manifests/" + "v" * 129, "MANIFEST_UNKNOWN"),
        ("siderolabs/imager/blobs/v1.12.4", "BLOB_UNKNOWN"),
        ("siderolabs/imager/referrers/v1.12.4", "MANIFEST_UNKNOWN"),
    ],
)
def test_parse_route_refuses(path: str, code: str) -> None:
    with pytest.raises(RegistryError) as caught:
        sources.parse_route(path.split("/"))
    assert (caught.value.status, caught.value.code) == (404, code)


def test_components_by_short_name() -> None:
    core = CoreOptions()
    assert sources.component_repositories(core) == {
        "installer-base": "siderolabs/installer-base",
        "installer": "siderolabs/installer",
        "imager": "siderolabs/imager",
        "extensions": "siderolabs/extensions",
        "overlays": "siderolabs/overlays",
        "talosctl-all": "siderolabs/talosctl-all",
    }
    core.components.imager = "myorg/custom/imager"
    assert sources.repository_path(core, "imager") == "myorg/custom/imager"
    assert sources.repository_path(core, "dummy-module") == "siderolabs/dummy-module"
    core.namespace = "/mirror/"
    assert sources.repository_path(core, "imager") == "mirror/myorg/custom/imager"
    assert sources.repository_path(core, "overlays") == "mirror/siderolabs/overlays"


@pytest.mark.parametrize(
    ("registry", "namespace", "insecure", "url"),
    [
        ("ghcr.io", "", False, "https://ghcr.io/v2/siderolabs/imager/manifests/v1.12.4"),
        ("ghcr.io", "siderolabs", False, "https://ghcr.io/v2/siderolabs/siderolabs/imager/manifests/v1.12.4"),
        (
            "127.0.0.1:5000",
            "fixture",
            False,
            "http://127.0.0.1:5000/v2/fixture/siderolabs/imager/manifests/v1.12.4",
        ),
        (
            "mirror.example:5000",
            "",
            True,
            "http://mirror.example:5000/v2/siderolabs/imager/manifests/v1.12.4",
        ),
    ],
)
def test_upstream_url(registry: str, namespace: str, insecure: bool, url: str) -> None:
    core = CoreOptions(registry=registry, namespace=namespace, insecure=insecure)
    route = sources.parse_route(["siderolabs", "imager", "manifests", "v1.12.4"])
    assert sources.upstream_url(core, route) == url


def test_filter_index() -> None:
    manifests = [
        {"digest": "sha256:1", "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
        {"digest": "sha256:2", "artifactType": "application/spdx+json"},
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    body = json.dumps(index).encode()
    assert sources.filter_index(body, "") == (body, False)
    filtered, applied = sources.filter_index(body, "application/spdx+json")
    assert applied
    assert json.loads(filtered)["manifests"] == [manifests[1]]


def test_empty_index_is_the_spec_document() -> None:
    assert json.loads(sources.EMPTY_INDEX) == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "siderolabs/installer/tags/v1", 404),
        ("GET", "siderolabs/BAD/manifests/v1", 404),
        ("PUT", "siderolabs/imager/manifests/v1", 405),
        ("DELETE", "siderolabs/imager/blobs/" + DIGEST, 405),
    ],
)
def test_handle_refuses_without_asking_the_registry(method: str, path: str, status: int) -> None:
    config = Config()
    config.artifacts.core.registry = "127.0.0.1:9"  # discard port: nothing may be sent there
    app = Flask(__name__)
    with app.test_request_context(f"/v2/{path}", method=method):
        resp = sources.handle(request, config, path.split("/"))
    assert resp.status_code == status
    assert resp.mimetype == "application/json"
    assert resp.get_json()["errors"][0]["code"] in ("NAME_UNKNOWN", "UNSUPPORTED")
