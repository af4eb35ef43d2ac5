"""The release catalog: offered Talos versions and each version's official extensions and overlays."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import services
from api.responses import json_response
from common.artifacts.manager import ArtifactsManager
from common.talos import version as v

bp = Blueprint("meta", __name__)


def artifacts() -> ArtifactsManager:
    return services().artifacts


@bp.get("/versions")
def versions() -> Response:
    if request.args.get("broken") == "true":
        return json_response([v.tag(b) for b in artifacts().broken_versions()])
    return json_response([v.tag(x) for x in artifacts().talos_versions()])


@bp.get("/version/<version>/extensions/official")
def official_extensions(version: str) -> Response:
    extensions = artifacts().official_extensions(v.version_from_path(version))
    return json_response(
        [
            {
                "name": e.name,
                "ref": str(e.ref),
                "digest": e.digest,
                "author": e.author,
                "description": e.description,
            }
            for e in extensions
        ]
    )


@bp.get("/version/<version>/overlays/official")
def official_overlays(version: str) -> Response:
    overlays = artifacts().official_overlays(v.version_from_path(version))
    return json_response(
        [{"name": o.name, "image": o.ref.repository, "ref": str(o.ref), "digest": o.digest} for o in overlays]
    )
