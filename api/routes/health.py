"""Liveness (the process answers) and readiness (its dependencies answer)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from api.errors import text_response
from common.readiness import failing

bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    return Response(b"", status=200, mimetype="text/plain")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Response:
    down = failing(current_app.extensions["factory"].readiness)
    if down:
        return text_response("not ready: " + ", ".join(down) + " down", 503)
    return text_response("ok", 200)
