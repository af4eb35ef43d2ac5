"""Liveness (the process answers) and readiness (its dependencies answer)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.context import services
from api.errors import text_response
from common.readiness import failing

bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    return Response(b"", status=200, mimetype="text/plain")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Response:
    found = services()
    down = failing(found.readiness)
    notes = [note for note in (found.artifacts.versions_note(),) if note]
    if down:
        return text_response("\n".join(["not ready: " + ", ".join(down) + " down", *notes]), 503)
    return text_response("\n".join(["ok", *notes]), 200)
