"""The source-image proxy: ``/v2/siderolabs/<image>/…`` served from ``artifacts.core``.

Upstream v1.5 answers ``/v2/siderolabs/{installer-base,installer,imager,extensions,overlays,
talosctl-all}/{manifests,blobs}/…`` by proxying to its backing registry (``handleImageProxy`` in
``siderolabs/image-factory:internal/frontend/http/registry.go``), so that machines which can only
reach the factory can still pull the release's images. We serve the same, and more:

* every single-segment ``siderolabs/<name>`` the core registry has, not only the components: a
  release's extensions and overlays are catalogued as ``<core registry>/<namespace>/siderolabs/
  <name>@sha256:…`` (``common/artifacts/catalog.py``), and a node that installs them must be able
  to pull them through the factory too;
* ``tags/list`` and ``referrers/<digest>``, and cosign's legacy signature tags
  (``sha256-<hex>.sig``, ordinary manifests by tag), so signatures stay verifiable through the
  proxy. Referrers are passed through; a backing registry without the referrers API (``404``, as
  distribution 2.8) is answered from the OCI 1.1 referrers tag schema (the ``sha256-<hex>`` index),
  or with an empty index when there is no such tag.

Deliberate difference: upstream refuses to proxy (``503`` "proxying to an authorized/secure backing
registry is not possible") unless the backing registry is plain http. We proxy over https as well:
``api/registry/proxy.py`` never adds credentials (only anonymous pull tokens a registry hands out
without any), so nothing secret can leak, and a registry that does want credentials is reported as
unavailable by the proxy. The https case is the common one (ghcr.io, the default core registry).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

from flask import Request, Response

from api.registry import proxy
from api.registry.errors import RegistryError, error_response, factory_error_response
from common.config import Config
from common.config.options import CoreOptions
from common.cosign.registry import referrers_tag
from common.gojson import marshal
from common.registry.client import DOCKER_MANIFEST_LIST, OCI_INDEX

#: The first path segment of every source image.
PREFIX = "siderolabs"
#: One path component of a repository name (distribution-spec ``<name>`` grammar, no ``/``).
NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
#: distribution-spec ``<reference>`` as a tag.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: OCI image-spec digest grammar (``algorithm:encoded``).
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
#: Longest image name or digest forwarded upstream (distribution-spec clients limit a whole
#: repository name to 255 characters; a sha512 digest is 135): longer ones are unknown, not a
#: request for the source registry to refuse.
MAX_COMPONENT = 255
#: The largest referrers-tag index we read into memory.
MAX_INDEX_SIZE = 4 * 1024 * 1024
EMPTY_INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'


@dataclass(frozen=True)
class SourceRoute:
    """One source-image API call: ``/v2/siderolabs/<image>/<resource>/<reference>``."""

    image: str  # the single segment after siderolabs/, e.g. imager or dummy-module
    resource: str  # manifests | blobs | tags | referrers
    reference: str  # tag or digest; "list" for tags


def parse_route(segments: list[str]) -> SourceRoute:
    """The route for the path segments after ``/v2/``; ``RegistryError`` 404 (``NAME_UNKNOWN``) for
    anything that is not a source-image call (another prefix, a nested or invalid name, an unknown
    sub-resource), ``MANIFEST_UNKNOWN``/``BLOB_UNKNOWN`` for a malformed reference."""
    if (
        len(segments) != 4
        or segments[0] != PREFIX
        or len(PREFIX) + 1 + len(segments[1]) > MAX_COMPONENT
        or not NAME.match(segments[1])
    ):
        raise RegistryError(404, "NAME_UNKNOWN", f"unknown image: {'/'.join(segments[:2])}")
    image, resource, reference = segments[1:]
    if resource == "tags":
        if reference != "list":
            raise RegistryError(404, "NAME_UNKNOWN", f"unknown resource: tags/{reference}")
    elif resource == "manifests":
        if len(reference) > MAX_COMPONENT or not (TAG.match(reference) or DIGEST.match(reference)):
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"invalid reference: {reference}")
    elif resource in ("blobs", "referrers"):
        if len(reference) > MAX_COMPONENT or not DIGEST.match(reference):
            code = "BLOB_UNKNOWN" if resource == "blobs" else "MANIFEST_UNKNOWN"
            raise RegistryError(404, code, f"invalid digest: {reference}")
    else:
        raise RegistryError(404, "NAME_UNKNOWN", f"unknown resource: {resource}")
    return SourceRoute(image, resource, reference)


def component_repositories(core: CoreOptions) -> dict[str, str]:
    """Image name under ``/v2/siderolabs/`` → repository path of the configured components.

    ``artifacts.core.components.*`` are ``siderolabs/<name>`` by default (so the mapping is the
    identity then); a component configured elsewhere (``myorg/imager``) is still served as
    ``siderolabs/imager``, as upstream's ``ImageProxy.Images`` maps short names to repositories.
    """
    repositories: dict[str, str] = {}
    for item in dataclasses.fields(core.components):
        repository = str(getattr(core.components, item.name)).strip("/")
        if repository:
            repositories[repository.rsplit("/", 1)[-1]] = repository
    return repositories


def repository_path(core: CoreOptions, image: str) -> str:
    """``[<namespace>/]<repository>`` of ``image`` on the core registry."""
    repository = component_repositories(core).get(image, f"{PREFIX}/{image}")
    return "/".join(p for p in (core.namespace.strip("/"), repository) if p)


def upstream_url(core: CoreOptions, route: SourceRoute) -> str:
    """``<scheme>://<core registry>/v2/[<namespace>/]<repository>/<resource>/<reference>``."""
    base = proxy.registry_base_url(core.registry, core.insecure)
    return f"{base}/v2/{repository_path(core, route.image)}/{route.resource}/{route.reference}"


def filter_index(body: bytes, artifact_type: str) -> tuple[bytes, bool]:
    """A referrers index restricted to ``artifact_type`` (when given); whether a filter was applied.

    Without a filter, the index bytes are returned as they are (its digest stays the tag's).
    """
    if not artifact_type:
        return body, False
    document = json.loads(body)
    manifests = [m for m in document.get("manifests") or [] if m.get("artifactType") == artifact_type]
    return marshal({**document, "manifests": manifests}), True


def _index_response(body: bytes, filtered: bool) -> Response:
    resp = Response(body, status=200, content_type=OCI_INDEX)
    resp.headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
    resp.headers["Docker-Distribution-API-Version"] = "registry/2.0"
    if filtered:
        resp.headers["OCI-Filters-Applied"] = "artifactType"
    return resp


def _referrers_fallback(request: Request, core: CoreOptions, route: SourceRoute, timeout: float) -> Response:
    """The referrers of ``route.reference`` from the ``sha256-<hex>`` referrers tag, or an empty index.

    ``opencontainers/distribution-spec@v1.1.0:spec.md`` ("Unavailable Referrers API"): clients (and
    pushers such as cosign) keep an index under that tag on registries without the API.
    """
    tag_route = SourceRoute(route.image, "manifests", referrers_tag(route.reference))
    url = upstream_url(core, tag_route)
    headers = {"Accept": f"{OCI_INDEX}, {DOCKER_MANIFEST_LIST}", "Accept-Encoding": "identity"}
    try:
        upstream = proxy.open_upstream("GET", url, headers, timeout=timeout)
    except proxy.UpstreamUnavailable as exc:
        return proxy.unavailable(exc.host)
    with upstream:
        if upstream.status_code in (401, 403, 404):
            return _index_response(EMPTY_INDEX, False)
        if upstream.status_code != 200:
            return proxy.unavailable(core.registry)
        body = b""
        for chunk in upstream.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_INDEX_SIZE:
                return error_response(502, f"referrers index of {route.reference} is too large")
    try:
        document = json.loads(body)
        is_index = isinstance(document, dict) and isinstance(document.get("manifests"), list)
    except ValueError:
        is_index = False
    if not is_index:
        return _index_response(EMPTY_INDEX, False)
    filtered_body, filtered = filter_index(body, request.args.get("artifactType", ""))
    return _index_response(filtered_body, filtered)


def handle(
    request: Request, config: Config, segments: list[str], *, timeout: float = proxy.DEFAULT_TIMEOUT
) -> Response:
    """Answers ``/v2/<segments…>`` (``segments[0] == "siderolabs"``) from ``artifacts.core``.

    ``GET`` and ``HEAD`` only. Errors are registry-shaped JSON (``api/registry/errors.py``).
    """
    if request.method not in ("GET", "HEAD"):
        return error_response(405, f"method {request.method} is not supported")
    try:
        route = parse_route(segments)
    except RegistryError as exc:
        return factory_error_response(exc)
    core = config.artifacts.core
    url = upstream_url(core, route)
    max_read_time = config.artifacts.limits.maxReadTime.total_seconds()
    if route.resource != "referrers":
        return proxy.forward(request, url, timeout=timeout, max_read_time=max_read_time)
    try:
        headers = proxy.request_headers(request.headers.items())
        upstream = proxy.open_upstream(request.method, _with_query(request, url), headers, timeout=timeout)
    except proxy.UpstreamUnavailable as exc:
        return proxy.unavailable(exc.host)
    if upstream.status_code in (404, 405):
        upstream.close()
        return _referrers_fallback(request, core, route, timeout)
    return proxy.relay(request, upstream, url, max_read_time=max_read_time)


def _with_query(request: Request, url: str) -> str:
    query = request.query_string.decode("latin-1")
    return f"{url}?{query}" if query else url
