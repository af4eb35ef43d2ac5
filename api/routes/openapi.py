"""``GET /openapi.json``: the API's OpenAPI 3.1 document (``api/openapi.py``; ours, upstream has none)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.openapi import document_bytes

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    resp = Response(document_bytes(), status=200, mimetype="application/json")
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
