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
from common.cache.base import CachedAsset
from common.cache.bundles import asset_bundle
from common.cache.checksums import ALGORITHMS, AssetChecksums
from common.delivery.service import Delivery, Pending
from common.errors import UnavailableError

bp = Blueprint("image", __name__)

#: ``<asset>.sha256`` / ``.sha512`` (the checksum in sha256sum format) and ``<asset>.sigstore.json``
#: (a Sigstore bundle signed with the cache key): upstream's enterprise features, 402 in its community
#: edition. Each is answered from the asset's signed cache entry (common/cache/checksums.py, bundles.py).
_INTEGRITY = {".sha256": "sha256", ".sha512": "sha512", ".sigstore.json": "sigstore"}


class StillBuildingError(UnavailableError):
    """``build.waitTimeout`` ran out for a plain request: 503, retry after the build's ETA."""

    def __init__(self, key: str, retry_after: int) -> None:
        super().__init__(
            f"the asset is still being built (status: /builds/{key}); retry in {retry_after} seconds"
        )
        self.retry_after = retry_after


@bp.route("/image/<schematic_id>/<version>/<path>", methods=["GET", "HEAD"])
def image(schematic_id: str, version: str, path: str) -> Response:
    suffix = next((s for s in _INTEGRITY if path.endswith(s)), None)
    if suffix is not None:  # the asset itself is located, built or waited for, as for a download
        path = path.removesuffix(suffix)
    d = delivery()
    target = d.locate(schematic_id, version, path)
    filename = safe_filename(request.args.get("filename"), path)
    respond_async = wants_async(request)
    found = d.obtain(target, wait=not respond_async)
    if isinstance(found, Pending):
        if not respond_async:
            raise StillBuildingError(found.key, int(retry_after(d.eta(found.record))))
        return pending_response(d, found, request.base_url, preference_applied=True)
    if suffix is not None:
        return _integrity(d, target.key, found, filename, _INTEGRITY[suffix])
    return asset_response(
        d, found, request, key=target.key, filename=filename, content_type=content_type(path)
    )


def _integrity(d: Delivery, key: str, asset: CachedAsset, filename: str, kind: str) -> Response:
    checksums = AssetChecksums(d.services.cache)
    if kind == "sigstore":
        digests = {algorithm: checksums.hexdigest(key, asset, algorithm) for algorithm in ALGORITHMS}
        bundle = asset_bundle(d.services.cache_signer, filename, digests)
        return Response(bundle, mimetype="application/json")
    return Response(f"{checksums.hexdigest(key, asset, kind)}  {filename}\n", mimetype="text/plain")
