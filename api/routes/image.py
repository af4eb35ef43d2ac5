"""``GET|HEAD /image/<schematic>/<version>/<path>``: a cached asset, or a build to wait for or poll."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import services
from api.delivery import Pending, asset_response, delivery, pending_response
from common.builds.plan import content_type, safe_filename
from common.errors import FactoryError

bp = Blueprint("image", __name__)

#: Enterprise-only suffixes upstream answers 402 for in community builds.
_ENTERPRISE = {
    ".sha256": "enterprise not enabled: checksum endpoint is not available",
    ".sha512": "enterprise not enabled: checksum endpoint is not available",
    ".sigstore.json": "enterprise signing is not enabled: signature endpoint is not available",
}


class PaymentRequiredError(FactoryError):
    status = 402


def wants_async() -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


@bp.route("/image/<schematic_id>/<version>/<path>", methods=["GET", "HEAD"])
def image(schematic_id: str, version: str, path: str) -> Response:
    for suffix, message in _ENTERPRISE.items():
        if path.endswith(suffix):
            raise PaymentRequiredError(message)
    svc = services()
    d = delivery()
    resolved = d.resolve(schematic_id, version, path)
    req, plan, key = resolved.request, resolved.plan, resolved.key
    filename = safe_filename(request.args.get("filename"), path)
    asset = d.lookup(key)
    if asset is None:
        d.ensure(key, req, plan)
        if wants_async():
            return pending_response(d, Pending(key, svc.builds.get(key)), preference_applied=True)
        waited = d.wait(key)
        if isinstance(waited, Pending):
            return pending_response(d, waited, preference_applied=False)
        asset = waited
    return asset_response(d, asset, request, key=key, filename=filename, content_type=content_type(path))
