"""``GET|HEAD /image/<schematic>/<version>/<path>``: a cached asset, or a build to wait for or poll."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import delivery
from api.rendering import asset_response, pending_response, wants_async
from common.builds.plan import content_type, safe_filename
from common.delivery.service import Pending
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


@bp.route("/image/<schematic_id>/<version>/<path>", methods=["GET", "HEAD"])
def image(schematic_id: str, version: str, path: str) -> Response:
    for suffix, message in _ENTERPRISE.items():
        if path.endswith(suffix):
            raise PaymentRequiredError(message)
    d = delivery()
    target = d.locate(schematic_id, version, path)
    filename = safe_filename(request.args.get("filename"), path)
    respond_async = wants_async(request)
    found = d.obtain(target, wait=not respond_async)
    if isinstance(found, Pending):
        return pending_response(d, found, request.base_url, preference_applied=respond_async)
    return asset_response(
        d, found, request, key=target.key, filename=filename, content_type=content_type(path)
    )
