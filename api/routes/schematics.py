"""POST /schematics and GET /schematics/<id>, with upstream's statuses, types and texts."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import installers, services
from api.responses import go_json
from common.schematic.service import SchematicService

bp = Blueprint("schematics", __name__)


def _service() -> SchematicService:
    return services().schematics


@bp.post("/schematics")
def create() -> Response:
    created = _service().create(request.get_data(cache=False))
    installers().prebuild_later(created.id)  # build.prebuildInstallers, in the background
    body = go_json({"id": created.id, "schematic": created.canonical.decode()})
    return Response(body, status=201, mimetype="application/json")


@bp.get("/schematics/<schematic_id>")
def get(schematic_id: str) -> Response:
    return Response(_service().get(schematic_id), status=200, mimetype="application/yaml")
