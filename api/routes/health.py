"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: it can serve).

``/readyz`` fails only for this process's own state (starting, shutting down); an outage of a
shared dependency is listed by ``/readyz?verbose`` and leaves it 200. Why: ``common.readiness``.

Without ``verbose`` the answer is upstream's: 200 with an empty body, or 503 ``not ready``, and no
dependency is contacted, so a hanging one cannot make the probe time out. With ``verbose`` (ours)
every check is listed as Kubernetes' own endpoints list theirs: ``[+]name ok`` or
``[-]name failed: reason``, then ``readyz check passed`` or ``readyz check failed``.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState

from api.context import services
from api.errors import text_response
from common.readiness import LIFECYCLE, lifecycle, states

bp = Blueprint("health", __name__)


@bp.record_once
def _serving(_state: BlueprintSetupState) -> None:
    """The app is being built with its routes: from here on this process can serve. (gunicorn forks
    its workers only once the app is built, so no request sees a half-built one.)"""
    lifecycle.serving()


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    return Response(b"", status=200, mimetype="text/plain")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Response:
    if "verbose" not in request.args:
        if lifecycle.ready:
            return Response(b"", status=200, mimetype="text/plain")
        return text_response("not ready", 503)
    found = states(services().readiness)
    lines = [f"[+]{name} ok" if ok else f"[-]{name} failed: {reason}" for name, (ok, reason) in found.items()]
    ready = found[LIFECYCLE][0]  # the one check that decides
    lines.append("readyz check passed" if ready else "readyz check failed")
    return text_response("\n".join(lines), 200 if ready else 503)
