"""The source-image proxy (``api/registry/sources.py`` over ``api/registry/proxy.py``) against the
session's real registry and fixture release, checked with real clients (skopeo, requests).

The ``/v2`` dispatcher blueprint is not part of the factory yet, so ``sources.handle`` is mounted in
a small Flask app served by werkzeug on a free loopback port, with a Config built like the stack's
(``devstack.factory.factory_config`` + ``factory_overrides``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from api.registry import sources
from common.config import Config, load_config
from common.config.options import RepositoryOptions
from common.cosign.registry import referrers_tag, signature_tag
from common.registry.client import ACCEPT_MANIFESTS, OCI_INDEX, RegistryClient
from devstack.factory import factory_config, write_config
from devstack.release.release import Release, factory_overrides
from devstack.services import LOOPBACK, RegistryServer, free_port

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
LARGE_BLOB_SIZE = 24 * 1024 * 1024
LARGE_REPO = "siderolabs/proxy-large-blob"


def _config(tmp: Path, registry: RegistryServer, release: Release, **overrides: object) -> Config:
    values = factory_config(
        "redis://127.0.0.1:1/0", registry.host, **{**factory_overrides(release), **overrides}
    )
    path = tmp / "config.yaml"
    write_config(path, values)
    return load_config([str(path)])


class ProxyServer:
    """``sources.handle`` under ``/v2/<path>`` on a werkzeug server in a thread."""

    def __init__(self, config: Config, *, timeout: float = 10.0) -> None:
        app = Flask("source-proxy-test")

        @app.route("/v2/", methods=["GET", "HEAD"])
        def root() -> Response:  # the API version check clients start with (the dispatcher's job)
            return Response(b"{}", content_type="application/json")

        @app.route("/v2/<path:path>", methods=["GET", "HEAD"])
        def v2(path: str) -> Response:
            return sources.handle(request, config, path.split("/"), timeout=timeout)

        self.port = free_port()
        self.server = make_server(LOOPBACK, self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> ProxyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def proxy(
    registry: RegistryServer, fixture_release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyServer]:
    with ProxyServer(_config(tmp_path_factory.mktemp("proxy"), registry, fixture_release)) as server:
        yield server


@pytest.fixture(scope="module")
def large_blob(registry: RegistryServer, fixture_release: Release) -> tuple[str, int]:
    """A 24 MiB blob pushed to a ``siderolabs/…`` repository of the fixture namespace."""
    client = RegistryClient(
        RepositoryOptions(
            registry=registry.host, namespace=fixture_release.namespace, repository=LARGE_REPO, insecure=True
        )
    )
    data = hashlib.shake_256(b"source proxy large blob").digest(LARGE_BLOB_SIZE)
    return client.push_blob(data), len(data)


def _upstream(release: Release, repository: str) -> str:
    return f"{release.registry}/{release.namespace}/{repository}"


def _api(release: Release, repository: str) -> str:
    """The backing registry's API base of a repository of the fixture release."""
    return f"http://{release.registry}/v2/{release.namespace}/{repository}"


def _skopeo(skopeo: str, *args: str) -> bytes:
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run([skopeo, *args], capture_output=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _raw(skopeo: str, reference: str) -> bytes:
    return _skopeo(skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{reference}")


def _ext(release: Release, name: str) -> tuple[str, str]:
    """(tag, digest) of an extension image of the fixture release, for ``VERSION``."""
    for key, digest in release.images.items():
        repository, _, tag = key.partition(":")
        if repository == name and tag.endswith(VERSION):
            return tag, digest
    raise AssertionError(f"{name} for {VERSION} is not in the fixture release")


# --- clients --------------------------------------------------------------------------------------


def test_skopeo_inspect_raw_is_the_backing_registrys_bytes(
    proxy: ProxyServer, fixture_release: Release, skopeo: str
) -> None:
    through = _raw(skopeo, f"{proxy.host}/siderolabs/imager:{VERSION}")
    direct = _raw(skopeo, f"{_upstream(fixture_release, 'siderolabs/imager')}:{VERSION}")
    assert through == direct
    assert json.loads(through)["mediaType"] == OCI_INDEX
    digest = "sha256:" + hashlib.sha256(through).hexdigest()
    assert digest == fixture_release.images[f"siderolabs/imager:{VERSION}"]


def test_skopeo_copies_the_multi_arch_imager(proxy: ProxyServer, tmp_path: Path, skopeo: str) -> None:
    layout = tmp_path / "imager"
    _skopeo(
        skopeo,
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{proxy.host}/siderolabs/imager:{VERSION}",
        f"oci:{layout}:x",
    )
    index = json.loads((layout / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["x"]
    # every blob skopeo stored is the one its name says (skopeo checks too; this is belt and braces)
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_an_extension_and_its_cosign_signature_are_reachable(
    proxy: ProxyServer, fixture_release: Release, tmp_path: Path, skopeo: str
) -> None:
    tag, digest = _ext(fixture_release, "siderolabs/dummy-module")
    _skopeo(
        skopeo,
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{proxy.host}/siderolabs/dummy-module@{digest}",
        f"oci:{tmp_path / 'ext'}:x",
    )
    by_tag = _raw(skopeo, f"{proxy.host}/siderolabs/dummy-module:{tag}")
    assert "sha256:" + hashlib.sha256(by_tag).hexdigest() == digest
    sig = _raw(skopeo, f"{proxy.host}/siderolabs/dummy-module:{signature_tag(digest)}")
    assert sig == _raw(
        skopeo, f"{_upstream(fixture_release, 'siderolabs/dummy-module')}:{signature_tag(digest)}"
    )
    layers = json.loads(sig)["layers"]
    assert layers and all("dev.cosignproject.cosign/signature" in layer["annotations"] for layer in layers)


# --- API calls one by one --------------------------------------------------------------------------


def test_head_manifest_and_conditional_get(proxy: ProxyServer, fixture_release: Release) -> None:
    url = f"{proxy.url}/v2/siderolabs/imager/manifests/{VERSION}"
    digest = fixture_release.images[f"siderolabs/imager:{VERSION}"]
    head = requests.head(url, headers={"Accept": ACCEPT_MANIFESTS}, timeout=10)
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Type"] == OCI_INDEX
    assert int(head.headers["Content-Length"]) > 0
    assert head.content == b""
    get = requests.get(url, headers={"Accept": ACCEPT_MANIFESTS}, timeout=10)
    assert int(head.headers["Content-Length"]) == len(get.content)
    assert "Authorization" not in get.request.headers
    again = requests.get(
        url, headers={"Accept": ACCEPT_MANIFESTS, "If-None-Match": f'"{digest}"'}, timeout=10
    )
    assert again.status_code == 304
    assert again.content == b""


def test_accept_header_is_honoured(proxy: ProxyServer) -> None:
    """Only single manifests accepted: the registry cannot serve the index (distribution: 404)."""
    url = f"{proxy.url}/v2/siderolabs/imager/manifests/{VERSION}"
    narrow = requests.get(url, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    assert narrow.status_code == 404, narrow.headers
    # two Accept lines, as skopeo and containerd send them
    conn = http.client.HTTPConnection(LOOPBACK, proxy.port, timeout=10)
    try:
        conn.putrequest("GET", f"/v2/siderolabs/imager/manifests/{VERSION}")
        conn.putheader("Accept", "application/vnd.oci.image.manifest.v1+json")
        conn.putheader("Accept", OCI_INDEX)
        conn.endheaders()
        several = conn.getresponse()
        several.read()
    finally:
        conn.close()
    assert several.status == 200
    assert several.headers["Content-Type"] == OCI_INDEX


def test_tags_list_with_paging(proxy: ProxyServer, fixture_release: Release) -> None:
    direct = requests.get(f"{_api(fixture_release, 'siderolabs/imager')}/tags/list", timeout=10).json()[
        "tags"
    ]
    assert VERSION in direct
    whole = requests.get(f"{proxy.url}/v2/siderolabs/imager/tags/list", timeout=10)
    assert whole.status_code == 200
    assert whole.json()["tags"] == direct
    tags: list[str] = []
    url: str | None = f"{proxy.url}/v2/siderolabs/imager/tags/list?n=3"
    pages = 0
    while url:
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        tags.extend(page.json()["tags"])
        pages += 1
        link = page.links.get("next", {}).get("url")
        if link:
            assert link.startswith("/v2/siderolabs/imager/tags/list?"), link
        url = f"{proxy.url}{link}" if link else None
    # distribution 2.8 ignores ``n`` (one page): the Link rewrite itself is in the unit tests.
    assert pages >= 1
    assert tags == direct


_SERVE = """
import sys
from flask import Flask, request
from werkzeug.serving import make_server
from api.registry import sources
from common.config import load_config

config = load_config([sys.argv[1]])
app = Flask("source-proxy-memory")

@app.route("/v2/<path:path>", methods=["GET", "HEAD"])
def v2(path):
    return sources.handle(request, config, path.split("/"))

server = make_server("127.0.0.1", int(sys.argv[2]), app, threaded=True)
print("ready", flush=True)
server.serve_forever()
"""


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_blob_stream_range_and_bounded_memory(
    proxy: ProxyServer,
    large_blob: tuple[str, int],
    registry: RegistryServer,
    fixture_release: Release,
    tmp_path: Path,
) -> None:
    """The proxy runs in a process of its own here, so its peak memory is its own: streaming a
    24 MiB blob grows it by far less than the blob (it holds one chunk at a time)."""
    digest, size = large_blob
    name = LARGE_REPO.split("/")[1]
    _config(tmp_path, registry, fixture_release)  # writes tmp_path/config.yaml
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(tmp_path / "config.yaml"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://{LOOPBACK}:{port}/v2/siderolabs/{name}/blobs/{digest}"
        assert requests.head(url, timeout=30).status_code == 200  # imports and pools warmed up
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _peak_rss(server.pid)
        hasher, received = hashlib.sha256(), 0
        with requests.get(url, stream=True, timeout=30) as response:
            assert response.status_code == 200
            assert int(response.headers["Content-Length"]) == size
            assert response.headers["Docker-Content-Digest"] == digest
            for chunk in response.iter_content(256 * 1024):
                hasher.update(chunk)
                received += len(chunk)
        grown = _peak_rss(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert received == size
    assert "sha256:" + hasher.hexdigest() == digest
    assert grown < size // 4, f"the proxy's peak memory grew by {grown} bytes while streaming {size}"
    url = f"{proxy.url}/v2/siderolabs/{name}/blobs/{digest}"
    ranged = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-1999/{size}"
    assert ranged.content == hashlib.shake_256(b"source proxy large blob").digest(2000)[1000:]


def test_client_going_away_does_not_break_the_proxy(proxy: ProxyServer, large_blob: tuple[str, int]) -> None:
    digest, size = large_blob
    url = f"{proxy.url}/v2/siderolabs/{LARGE_REPO.split('/')[1]}/blobs/{digest}"
    for _ in range(5):
        with requests.get(url, stream=True, timeout=10) as response:
            assert len(next(response.iter_content(65536))) > 0
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == size


def test_referrers_fall_back_to_the_referrers_tag(proxy: ProxyServer, fixture_release: Release) -> None:
    """distribution 2.8 has no referrers API: the overlays catalog's bundle is in the referrers tag."""
    digest = fixture_release.images[f"siderolabs/overlays:{VERSION}"]
    url = f"{proxy.url}/v2/siderolabs/overlays/referrers/{digest}"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    direct = requests.get(
        f"{_api(fixture_release, 'siderolabs/overlays')}/manifests/{referrers_tag(digest)}",
        headers={"Accept": OCI_INDEX},
        timeout=10,
    )
    assert direct.status_code == 200
    assert response.content == direct.content
    assert response.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(direct.content).hexdigest()
    manifests = response.json()["manifests"]
    assert manifests
    artifact_type = manifests[0]["artifactType"]
    filtered = requests.get(url, params={"artifactType": artifact_type}, timeout=10)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert filtered.json()["manifests"] == [m for m in manifests if m["artifactType"] == artifact_type]
    none = requests.get(url, params={"artifactType": "application/x-nothing"}, timeout=10)
    assert none.json()["manifests"] == []


def test_referrers_of_an_unreferenced_digest_are_an_empty_index(
    proxy: ProxyServer, fixture_release: Release
) -> None:
    digest = fixture_release.images[f"siderolabs/imager:{VERSION}"]
    response = requests.get(f"{proxy.url}/v2/siderolabs/imager/referrers/{digest}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.content == sources.EMPTY_INDEX
    head = requests.head(f"{proxy.url}/v2/siderolabs/imager/referrers/{digest}", timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(sources.EMPTY_INDEX)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("siderolabs/no-such-image/manifests/v1.0.0", "MANIFEST_UNKNOWN"),  # distribution 2.8 answers
        ("siderolabs/Bad_Name/manifests/v1.0.0", "NAME_UNKNOWN"),
        ("siderolabs/installer/tags/v1", "NAME_UNKNOWN"),
        ("siderolabs/imager/uploads/x", "NAME_UNKNOWN"),
        ("siderolabs/a/b/manifests/v1", "NAME_UNKNOWN"),
        ("siderolabs/imager/blobs/not-a-digest", "BLOB_UNKNOWN"),
        ("siderolabs/imager/manifests/v9.9.9", "MANIFEST_UNKNOWN"),
    ],
)
def test_unknown_things_are_404_json(proxy: ProxyServer, path: str, code: str) -> None:
    response = requests.get(f"{proxy.url}/v2/{path}", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["errors"][0]["code"] == code


def test_unreachable_backing_registry_is_503(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    config = _config(
        tmp_path, registry, fixture_release, **{"artifacts.core.registry": f"{LOOPBACK}:{free_port()}"}
    )
    with ProxyServer(config, timeout=2.0) as server:
        response = requests.get(f"{server.url}/v2/siderolabs/imager/manifests/{VERSION}", timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"] == f"registry {config.artifacts.core.registry} is unavailable"


class LockedRegistry(RegistryServer):
    """The same docker-registry, but every pull needs the Basic credentials ``puller:secret``."""

    def prepare(self) -> None:
        super().prepare()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # bcrypt through libcrypt; removed in Python 3.13

            hashed = crypt.crypt("secret", crypt.mksalt(crypt.METHOD_BLOWFISH))
        (self.state_dir / "htpasswd").write_text(f"puller:{hashed}\n")
        config = json.loads(self.config_path.read_text())
        config["auth"] = {"htpasswd": {"realm": "locked", "path": str(self.state_dir / "htpasswd")}}
        self.config_path.write_text(json.dumps(config))

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/v2/", timeout=0.5).status_code == 401
        except requests.RequestException:
            return False


def test_a_registry_wanting_credentials_is_503_and_client_credentials_are_not_forwarded(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    if sys.version_info >= (3, 13):
        pytest.skip("the crypt module (bcrypt for htpasswd) is gone in Python 3.13")
    with LockedRegistry(tmp_path / "locked") as locked:
        url = f"{locked.url}/v2/siderolabs/imager/tags/list"
        assert (
            requests.get(url, auth=("puller", "secret"), timeout=10).status_code == 404
        )  # it would let us in
        overrides = {"artifacts.core.registry": locked.host, "artifacts.core.namespace": ""}
        with ProxyServer(_config(tmp_path, registry, fixture_release, **overrides)) as server:
            response = requests.get(
                f"{server.url}/v2/siderolabs/imager/tags/list", auth=("puller", "secret"), timeout=10
            )
    assert response.status_code == 503
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "requires credentials" in error["message"]
    assert "WWW-Authenticate" not in response.headers
