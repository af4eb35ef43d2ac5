"""``/v2``: the OCI registry frontend (pull side of ``opencontainers/distribution-spec@v1.1.0``).

One catch-all route dispatches, as upstream's ``/v2/*path`` router
(``siderolabs/image-factory:internal/frontend/http/registry.go``):

* ``/v2/siderolabs/<image>/…`` — the source-image proxy (``api/registry/sources.py``);
* ``/v2/<image>/<schematic>/manifests/<ref>`` — installer images built on pull
  (``common/delivery/installers.py``), forwarded by digest;
* ``/v2/<image>/<schematic>/blobs/<digest>`` and ``…/referrers/<digest>`` — forwarded after the
  same checks.

Forwarding is a ``307`` to ``artifacts.installer.external`` when it is set, otherwise a streamed
proxy of ``artifacts.installer.internal``. Errors are the registry API's JSON errors.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from api.context import installers, services
from api.registry import proxy, sources
from api.registry.errors import error_response, factory_error_response
from api.responses import go_json
from common.errors import FactoryError, RegistryAPIError
from common.outages import OUTAGE_ERRORS, as_unavailable
from common.registry.client import OCI_INDEX

bp = Blueprint("registry", __name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_KINDS = frozenset({"manifests", "blobs", "referrers"})


@bp.errorhandler(FactoryError)
def _factory_error(exc: FactoryError) -> Response:
    return factory_error_response(exc)


def _outage(exc: Exception) -> Response:
    return factory_error_response(as_unavailable(exc))


for _kind in OUTAGE_ERRORS:
    bp.register_error_handler(_kind, _outage)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    return error_response(status, exc.description or exc.name)


@bp.route("/v2/", methods=["GET", "HEAD"])
def api_base() -> Response:
    resp = Response(b"{}", status=200, mimetype="application/json")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    return resp


@bp.route("/v2/<path:path>", methods=_ALL)
def dispatch(path: str) -> Response:
    if request.method not in ("GET", "HEAD"):
        return error_response(405, "this registry is read-only: only pulls are served", "UNSUPPORTED")
    segments = path.split("/")
    if segments[0] == "siderolabs":
        return sources.handle(request, services().config, segments)
    if len(segments) != 4 or not all(segments):
        raise RegistryAPIError(404, "NAME_UNKNOWN", "404 page not found")
    image, schematic_id, kind, ref = segments
    svc = installers()
    if (kind, ref) == ("tags", "list"):  # what a plain `skopeo inspect` lists: the published tags
        svc.check(schematic_id, image)
        return _forward(image, schematic_id, "tags/list")
    if kind not in _KINDS:
        raise RegistryAPIError(404, "NAME_UNKNOWN", "404 page not found")
    if kind == "manifests":
        ref = svc.manifest(schematic_id, image, ref)
    else:
        svc.check(schematic_id, image)
        if not ref.startswith("sha256:"):
            raise RegistryAPIError(400, "DIGEST_INVALID", f"invalid digest {ref!r}")
        if kind == "referrers":
            return _referrers(image, schematic_id, ref)
    return _forward(image, schematic_id, f"{kind}/{ref}")


def _forward(image: str, schematic_id: str, rest: str) -> Response:
    """``307`` to ``artifacts.installer.external`` when set, else a streamed proxy of the internal one."""
    svc = installers()
    if svc.redirects:
        repo = svc.repository(image, schematic_id, external=True)
        base = proxy.registry_base_url(repo.registry, repo.insecure)
        return proxy.redirect(f"{base}/v2/{repo.path}/{rest}")
    return proxy.forward(request, f"{svc.client(svc.repository(image, schematic_id)).base}/{rest}")


def _referrers(image: str, schematic_id: str, digest: str) -> Response:
    """The referrers of a published index (its cosign signature), from the internal registry's
    referrers API or, on registries without it, the referrers tag; an empty index otherwise."""
    svc = installers()
    client = svc.client(svc.repository(image, schematic_id))
    index = client.get_referrers(digest)
    if index is None:
        fallback = client.get_manifest("sha256-" + digest.removeprefix("sha256:"))
        index = fallback.document if fallback is not None and fallback.is_index else None
    manifests = list((index or {}).get("manifests") or [])
    wanted = request.args.get("artifactType")
    if wanted:
        manifests = [m for m in manifests if m.get("artifactType") == wanted]
    body = go_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    resp = Response(b"" if request.method == "HEAD" else body, status=200, content_type=OCI_INDEX)
    resp.headers["Content-Length"] = str(len(body))
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    if wanted:
        resp.headers["OCI-Filters-Applied"] = "artifactType"
    return resp
