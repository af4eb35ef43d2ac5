"""``GET /builds/<key>``: a build's status, for clients that asked with ``Prefer: respond-async``.

Ours: upstream has no build status. The key is the profile hash, as in the ``Location`` of a 202.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from flask import Blueprint, Response, request

from api.context import services
from api.delivery import delivery, retry_after, status_document
from api.responses import json_response
from common.builds.state import BuildRecord
from common.errors import NotFoundError

bp = Blueprint("builds", __name__)
_KEY = re.compile(r"^[0-9a-f]{64}$")


def asset_url(record: BuildRecord) -> str | None:
    r = record.request
    if not r:
        return None
    base = request.host_url.rstrip("/")
    return f"{base}/image/{quote(r['schematic'])}/{quote(r['version'])}/{quote(r['path'])}"


@bp.get("/builds/<key>")
def build_status(key: str) -> Response:
    svc = services()
    record = svc.builds.get(key) if _KEY.match(key) else None
    if record is None:
        raise NotFoundError(f"build {key!r} not found")
    d = delivery()
    if record.stale(time.time(), svc.builds.timeout):
        d.requeue_stale(record)
        record = svc.builds.get(key) or record
    resp = json_response(status_document(d, key, record, asset_url(record)))
    if not record.finished:
        resp.headers["Retry-After"] = retry_after(d.eta(record))
    resp.headers["Cache-Control"] = "no-store"
    return resp
