"""``GET /builds/<key>``: a build's status, for clients that asked with ``Prefer: respond-async``.

Ours: upstream has no build status. The key is the profile hash, as in the ``Location`` of a 202.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Blueprint, Response, request

from api.context import delivery
from api.rendering import progress_document, retry_after
from api.responses import json_response
from common.errors import NotFoundError

bp = Blueprint("builds", __name__)
_KEY = re.compile(r"^[0-9a-f]{64}$")


def asset_url(asked: dict[str, str]) -> str | None:
    """Where the built asset is downloaded: the ``/image`` URL the build was asked with."""
    if not asked:
        return None
    base = request.host_url.rstrip("/")
    return f"{base}/image/{quote(asked['schematic'])}/{quote(asked['version'])}/{quote(asked['path'])}"


@bp.get("/builds/<key>")
def build_status(key: str) -> Response:
    if not _KEY.match(key):
        raise NotFoundError(f"build {key!r} not found")
    progress = delivery().progress(key)
    resp = json_response(progress_document(progress, asset_url(progress.asked)))
    if not progress.finished:
        resp.headers["Retry-After"] = retry_after(progress.eta_seconds)
    resp.headers["Cache-Control"] = "no-store"
    return resp
