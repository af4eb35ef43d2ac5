"""``api/openapi.py``: a valid OpenAPI 3.1 document that covers every route the app registers, and
whose JSON schemas accept what the routes build by hand."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask import Flask
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from api import openapi
from api.rendering import progress_document
from api.routes import (
    builds,
    health,
    image,
    keys,
    meta,
    pxe,
    registry,
    schematics,
    secureboot,
    talosctl,
)
from api.routes import openapi as openapi_route
from common import readiness
from common.builds.state import Status
from common.delivery.progress import Progress

_PARAM = re.compile(r"<(?:[a-z]+:)?[a-z_]+>|\{[a-z_]+\}")
#: ``/v2/<path:path>`` dispatches on the path's shape (``api/routes/registry.py``): these are the shapes.
REGISTRY_SHAPES = [
    f"/v2/{prefix}/{kind}"
    for prefix in ("{image}/{schematic}", "siderolabs/{image}")
    for kind in ("manifests/{reference}", "blobs/{digest}", "referrers/{digest}", "tags/list")
]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    life = readiness.Lifecycle()
    monkeypatch.setattr(health, "lifecycle", life)  # registering health marks "serving"
    flask_app = Flask("t")
    for module in (
        health,
        schematics,
        meta,
        talosctl,
        image,
        builds,
        pxe,
        keys,
        secureboot,
        registry,
        openapi_route,
    ):
        flask_app.register_blueprint(module.bp)
    return flask_app


def shape(path: str) -> str:
    return _PARAM.sub("{}", path)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_and_method_is_documented(app: Flask) -> None:
    documented = {
        (shape(path), method.upper())
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        if rule.rule == "/v2/<path:path>":
            for path in REGISTRY_SHAPES:
                assert {(shape(path), "GET"), (shape(path), "HEAD")} <= documented, path
            continue
        for method in (rule.methods or set()) - {"OPTIONS"}:
            assert (shape(rule.rule), method) in documented, f"{method} {rule.rule} is not in /openapi.json"


def test_the_route_serves_the_document(app: Flask) -> None:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == openapi.document()


def validator(name: str) -> OAS31Validator:
    """Validates against one of the document's component schemas (their ``$ref``s resolve in it)."""
    doc = openapi.document()
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


@pytest.mark.parametrize(
    "progress",
    [
        Progress.queued(),
        Progress(
            status=Status.FAILED,
            queue_position=None,
            stage="imager",
            progress=0.5,
            eta_seconds=12.5,
            started_at=time.time(),
            finished_at=time.time(),
            error="boom",
            asked={},
        ),
    ],
)
def test_build_status_schema_accepts_what_the_routes_answer(progress: Progress) -> None:
    body: dict[str, Any] = progress_document(progress, "http://f/image/x/v1.12.4/kernel-amd64")
    validator("BuildStatus").validate(body)
    assert set(body) == set(openapi.document()["components"]["schemas"]["BuildStatus"]["properties"])


def test_registry_error_schema_accepts_the_registry_errors() -> None:
    from api.registry.errors import error_response

    with Flask("t").app_context():
        body = error_response(404, "nope").get_json()
    validator("RegistryErrors").validate(body)
