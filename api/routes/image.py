"""``GET|HEAD /image/<schematic>/<version>/<path>``: a cached asset, or a build to wait for or poll.

A request for an asset that is not cached queues its build (or joins the one in flight) and waits
for it up to ``build.waitTimeout``. When the wait runs out, a plain request gets ``503`` with
``Retry-After`` and a plain-text body, never the build's JSON status: ``curl -O`` or a PXE loader
must not save a status document as the image, and ``curl --retry``, talosctl and iPXE retry (or
fail loudly) on a 503; the build goes on and the retry joins it. Only a client that asks with
``Prefer: respond-async`` gets ``202 Accepted`` (at once, without waiting) with the status document
and ``Location: /builds/<key>`` to poll.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import delivery
from api.rendering import asset_response, pending_response, retry_after, wants_async
from common.builds.plan import content_type, safe_filename
from common.delivery.service import Pending
from common.errors import FactoryError, UnavailableError

bp = Blueprint("image", __name__)

#: Enterprise-only suffixes upstream answers 402 for in community builds.
_ENTERPRISE = {
    ".sha256": "enterprise not enabled: checksum endpoint is not available",
    ".sha512": "enterprise not enabled: checksum endpoint is not available",
    ".sigstore.json": "enterprise signing is not enabled: signature endpoint is not available",
}


class PaymentRequiredError(FactoryError):
    status = 402


class StillBuildingError(UnavailableError):
    """``build.waitTimeout`` ran out for a plain request: 503, retry after the build's ETA."""

    def __init__(self, key: str, retry_after: int) -> None:
        super().__init__(
            f"the asset is still being built (status: /builds/{key}); retry in {retry_after} seconds"
        )
        self.retry_after = retry_after


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
        if not respond_async:
            raise StillBuildingError(found.key, int(retry_after(d.eta(found.record))))
        return pending_response(d, found, request.base_url, preference_applied=True)
    return asset_response(
        d, found, request, key=target.key, filename=filename, content_type=content_type(path)
    )
