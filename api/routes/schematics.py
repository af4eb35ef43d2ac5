"""POST /schematics and GET /schematics/<id>, with upstream's statuses, types and texts."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from common.schematic.service import SchematicService

bp = Blueprint("schematics", __name__)


def _service() -> SchematicService:
    service: SchematicService = current_app.extensions["factory"].schematics
    return service


def go_json(payload: object) -> bytes:
    """JSON as Go's json.Encoder writes it: compact, HTML-escaped, newline-terminated."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


@bp.post("/schematics")
def create() -> Response:
    created = _service().create(request.get_data(cache=False))
    body = go_json({"id": created.id, "schematic": created.canonical.decode()})
    return Response(body, status=201, mimetype="application/json")


@bp.get("/schematics/<schematic_id>")
def get(schematic_id: str) -> Response:
    return Response(_service().get(schematic_id), status=200, mimetype="application/yaml")
