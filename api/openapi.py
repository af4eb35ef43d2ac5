"""The OpenAPI 3.1 document served at ``GET /openapi.json`` (ours: upstream has none, its issue #477).

Every route of the API is described here, with the marshmallow schemas of the JSON bodies it
answers (the routes build those bodies as plain dicts, ``api/rendering.py``, ``api/routes/*``; the
schemas below describe them, and ``tests/integration/test_openapi_contract.py`` fuzzes a live stack
with schemathesis to keep the two in step). Errors are upstream's plain-text bodies (a message and a
newline), except under ``/v2``, where they are the registry API's JSON errors.

The document is assembled once per process (``document()``) with apispec; it depends on no
configuration, so every replica serves the same bytes.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from common.gojson import encode as go_json
from common.version import VERSION as FACTORY_VERSION

OPENAPI_VERSION = "3.1.0"
TEXT = "text/plain"
JSON = "application/json"
HEX64 = r"^[0-9a-f]{64}$"


# --- JSON bodies ------------------------------------------------------------------------------


class SchematicCreatedSchema(Schema):
    """``POST /schematics``: the schematic's id and its canonical YAML (upstream's shape)."""

    id = fields.String(
        required=True, metadata={"description": "the schematic id: sha256 of its canonical form"}
    )
    schematic = fields.String(required=True, metadata={"description": "the canonical schematic, as YAML"})


class SchematicSchema(Schema):
    """The ``POST /schematics`` YAML body (upstream's ``siderolabs/image-factory:pkg/schematic``)."""

    customization = fields.Dict(
        metadata={
            "description": "extraKernelArgs, meta, systemExtensions.officialExtensions, "
            "secureboot, bootloader"
        }
    )
    overlay = fields.Dict(metadata={"description": "image, name and options of a board overlay"})


class BuildStatusSchema(Schema):
    """A build's status: the ``/builds/<key>`` body and a ``202 Accepted``'s (``api/rendering.py``)."""

    status = fields.String(required=True, metadata={"enum": ["queued", "running", "succeeded", "failed"]})
    queuePosition = fields.Integer(required=True, allow_none=True)
    stage = fields.String(required=True)
    progress = fields.Float(required=True, metadata={"minimum": 0, "maximum": 1})
    etaSeconds = fields.Integer(required=True, allow_none=True)
    startedAt = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    finishedAt = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    error = fields.String(required=True, allow_none=True)
    url = fields.String(
        required=True, allow_none=True, metadata={"description": "where the asset is downloaded once built"}
    )


class ExtensionSchema(Schema):
    """One entry of ``/version/<version>/extensions/official`` (``api/routes/meta.py``)."""

    name = fields.String(required=True)
    ref = fields.String(required=True)
    digest = fields.String(required=True)
    author = fields.String(required=True)
    description = fields.String(required=True)


class OverlaySchema(Schema):
    """One entry of ``/version/<version>/overlays/official`` (``api/routes/meta.py``)."""

    name = fields.String(required=True)
    image = fields.String(required=True)
    ref = fields.String(required=True)
    digest = fields.String(required=True)


class RegistryErrorSchema(Schema):
    code = fields.String(required=True, metadata={"description": "distribution-spec error code"})
    message = fields.String(required=True)
    detail = fields.Raw(required=True, allow_none=True)


class RegistryErrorsSchema(Schema):
    """Every ``/v2`` error (``api/registry/errors.py``)."""

    errors = fields.List(fields.Nested(RegistryErrorSchema), required=True)


# --- building blocks --------------------------------------------------------------------------


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _json(description: str, schema: Any, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


RETRY_AFTER = _header("seconds to wait before retrying", pattern=r"^[0-9]+$")


def _path(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


SCHEMATIC = _path("schematic", "a schematic id (POST /schematics answers it)")
VERSION = _path("version", "a Talos version, e.g. v1.12.4")

#: The plain-text errors: upstream's message and a newline.
ERRORS = {
    "BadRequest": "the request is invalid (plain text: the reason)",
    "NotFound": "no such schematic, version, asset or file (plain text)",
    "PayloadTooLarge": "the request body exceeds http.maxRequestBodySize (plain text)",
    "BadGateway": "a source image is invalid: its name and the reason (plain text)",
    "InternalError": "`internal server error` (plain text); the log has the cause",
}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "BadRequest", 404: "NotFound", 413: "PayloadTooLarge", 502: "BadGateway"}
    out: dict[str, Any] = {str(code): names[code] for code in codes}
    out["503"] = "Unavailable"
    return out


def _registry_errors() -> dict[str, Any]:
    return {str(code): "RegistryError" for code in (400, 401, 403, 404, 405, 429, 500, 501, 502, 503)}


def _asset_responses(what: str) -> dict[str, Any]:
    binary = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    disposition = _header('attachment; filename="…" (``?filename=`` reduced to a file name)')
    return {
        "200": {
            "description": f"the {what}",
            "headers": {"Content-Disposition": disposition, "ETag": _header("the build key, quoted")},
            "content": binary,
        },
        "206": {
            "description": f"one byte range of the {what} (``Range: bytes=…``)",
            "headers": {"Content-Range": _header("bytes first-last/size")},
            "content": binary,
        },
        "416": {
            "description": "the range starts beyond the asset's end (``Content-Range: bytes */size``)",
            "headers": {"Content-Range": _header("bytes */size")},
        },
    }


def _integrity_content(ok: dict[str, Any]) -> dict[str, Any]:
    """The asset's 200 plus what its ``.sha256``/``.sha512`` (text) and ``.sigstore.json`` answer."""
    bundle = {"type": "object", "required": ["mediaType", "verificationMaterial", "dsseEnvelope"]}
    return {
        **ok,
        "content": {
            "application/json": {"schema": bundle},
            "text/plain": {"schema": {"type": "string"}},  # also ``cmdline-*`` assets
            **ok["content"],
        },
    }


#: What a created schematic leads to (OpenAPI links: clients and schemathesis' stateful tests follow
#: them): the schematic itself, its assets and its PXE scripts, by the id the 201 answers.
_SCHEMATIC_LINKS = {
    name: {"operationId": operation, "parameters": {"schematic": "$response.body#/id"}}
    for name, operation in (
        ("GetSchematic", "getSchematic"),
        ("GetImage", "getImage"),
        ("HeadImage", "headImage"),
        ("GetPXEScript", "getPXEScript"),
    )
}


def _operations(spec: APISpec) -> None:
    get_or_head = ("get", "head")

    spec.path(
        path="/schematics",
        operations={
            "post": {
                "tags": ["schematics"],
                "summary": "Create a schematic (idempotent: the id is the hash of its canonical form)",
                "requestBody": {
                    "required": True,
                    "content": {"application/yaml": {"schema": "Schematic"}},
                },
                "operationId": "createSchematic",
                "responses": {
                    "201": {
                        **_json("the schematic's id and canonical form", "SchematicCreated"),
                        "links": _SCHEMATIC_LINKS,
                    },
                    **_errors(400, 413),
                },
            }
        },
    )
    spec.path(
        path="/schematics/{schematic}",
        parameters=[SCHEMATIC],
        operations={
            "get": {
                "tags": ["schematics"],
                "operationId": "getSchematic",
                "summary": "A schematic's canonical YAML",
                "responses": {
                    "200": {
                        "description": "the schematic's canonical form",
                        "content": {"application/yaml": {"schema": "Schematic"}},
                    },
                    **_errors(400, 404),
                },
            }
        },
    )

    image = {
        "tags": ["images"],
        "summary": "A boot asset: served, redirected to S3/CDN, or built first",
        "description": "A plain GET waits for the build (``build.waitTimeout``). With "
        "``Prefer: respond-async`` a build in progress answers 202 with its status and a ``Location`` "
        "to poll (``/builds/{key}``). HEAD is never redirected. ``<path>.sha256`` and ``<path>.sha512`` "
        "answer the asset's checksum as ``text/plain`` in sha256sum format, ``<path>.sigstore.json`` a "
        "Sigstore bundle signed with the cache key (``/oci/cosign/signing-key.pub``); each is built or "
        "waited for like the asset itself (upstream's community edition: 402).",
        "parameters": [
            {"in": "header", "name": "Prefer", "schema": {"type": "string", "enum": ["respond-async"]}},
            {
                "in": "header",
                "name": "Range",
                "schema": {"type": "string", "pattern": r"^bytes=[0-9]*-[0-9]*$"},
            },
            {"in": "query", "name": "filename", "schema": {"type": "string"}},
        ],
        "responses": {
            **_asset_responses("asset"),
            "200": _integrity_content(_asset_responses("asset")["200"]),
            "202": _json(
                "the build is in progress (only with ``Prefer: respond-async``)",
                "BuildStatus",
                {
                    "Location": _header("/builds/{key}"),
                    "Retry-After": RETRY_AFTER,
                    "Preference-Applied": _header("respond-async", enum=["respond-async"]),
                },
            ),
            "302": {
                "description": "the asset's bytes are in S3 (or behind the CDN): a presigned URL",
                "headers": {"Location": _header("the presigned URL", format="uri")},
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            **_errors(400, 404, 502),
            "500": "InternalError",
        },
    }
    spec.path(
        path="/image/{schematic}/{version}/{path}",
        parameters=[SCHEMATIC, VERSION, _path("path", "the asset, e.g. metal-amd64.iso or kernel-amd64")],
        operations={
            method: {**copy.deepcopy(image), "operationId": f"{method}Image"} for method in get_or_head
        },
    )
    spec.path(
        path="/builds/{key}",
        parameters=[_path("key", "the build key (the ``Location`` of a 202)", pattern=HEX64)],
        operations={
            "get": {
                "tags": ["images"],
                "summary": "A build's status (ours)",
                "responses": {
                    "200": _json("the build's status", "BuildStatus", {"Retry-After": RETRY_AFTER}),
                    **_errors(404),
                },
            }
        },
    )
    spec.path(
        path="/pxe/{schematic}/{version}/{path}",
        parameters=[SCHEMATIC, VERSION, _path("path", "<platform>-<arch>[-secureboot], e.g. metal-amd64")],
        operations={
            "get": {
                "tags": ["pxe"],
                "operationId": "getPXEScript",
                "summary": "The iPXE script booting the asset",
                "responses": {
                    "200": _text("the iPXE script"),
                    **_errors(400, 404, 502),
                    "500": "InternalError",
                },
            }
        },
    )
    spec.path(
        path="/versions",
        operations={
            "get": {
                "tags": ["catalog"],
                "summary": "The Talos versions offered",
                "parameters": [
                    {
                        "in": "query",
                        "name": "broken",
                        "description": "`true`: the versions that are known broken instead",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(
                        "the versions, oldest first", {"type": "array", "items": {"type": "string"}}
                    ),
                    **_errors(),
                },
            }
        },
    )
    for kind, schema in (("extensions", "Extension"), ("overlays", "Overlay")):
        spec.path(
            path=f"/version/{{version}}/{kind}/official",
            parameters=[VERSION],
            operations={
                "get": {
                    "tags": ["catalog"],
                    "summary": f"The release's official {kind}",
                    "responses": {
                        "200": _json(f"the {kind}", {"type": "array", "items": schema}),
                        **_errors(400, 404, 502),
                    },
                }
            },
        )
    spec.path(
        path="/talosctl/{version}",
        parameters=[VERSION],
        operations={
            "get": {
                "tags": ["talosctl"],
                "summary": "The URLs of a release's talosctl binaries",
                "responses": {
                    "200": _json(
                        "the download URLs",
                        {"type": "array", "items": {"type": "string", "format": "uri"}},
                    ),
                    **_errors(400, 404, 502),
                },
            }
        },
    )
    talosctl_file = {
        "tags": ["talosctl"],
        "summary": "One talosctl binary",
        "responses": {
            "200": {
                "description": "the file",
                "headers": {"Content-Disposition": _header('attachment; filename="…"')},
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            **_errors(400, 404, 502),
        },
    }
    spec.path(
        path="/talosctl/{version}/{path}",
        parameters=[VERSION, _path("path", "a file name, e.g. talosctl-linux-amd64")],
        operations={method: copy.deepcopy(talosctl_file) for method in get_or_head},
    )
    pem = {"application/x-pem-file": {"schema": {"type": "string"}}}
    spec.path(
        path="/oci/cosign/signing-key.pub",
        operations={
            "get": {
                "tags": ["keys"],
                "summary": "The public key verifying cached assets' and installer images' signatures",
                "responses": {"200": {"description": "a PEM public key", "content": pem}, **_errors()},
            }
        },
    )
    spec.path(
        path="/secureboot/signing-cert.pem",
        operations={
            "get": {
                "tags": ["keys"],
                "summary": "The certificate Secure Boot assets are signed with",
                "description": "Upstream answers 500 when Secure Boot is disabled; so does this.",
                "responses": {
                    "200": {"description": "a PEM certificate", "content": pem},
                    "500": "InternalError",
                },
            }
        },
    )
    empty = {"description": "alive", "content": {TEXT: {"schema": {"type": "string", "maxLength": 0}}}}
    spec.path(
        path="/healthz",
        operations={
            method: {"tags": ["health"], "summary": "Liveness", "responses": {"200": empty}}
            for method in get_or_head
        },
    )
    readyz = {
        "tags": ["health"],
        "summary": "Readiness of this process (``?verbose`` lists every dependency)",
        "parameters": [
            {"in": "query", "name": "verbose", "schema": {"type": "string"}, "allowEmptyValue": True}
        ],
        "responses": {
            "200": _text(
                "ready: empty, or with ``verbose`` one ``[+]name ok``/``[-]name failed: …`` line each"
            ),
            "503": _text("not ready (starting or shutting down)"),
        },
    }
    spec.path(path="/readyz", operations={method: copy.deepcopy(readyz) for method in get_or_head})
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "tags": ["meta"],
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
            }
        },
    )
    _registry(spec)


def _registry(spec: APISpec) -> None:
    """``/v2``: the pull side of the OCI distribution spec (``api/routes/registry.py``)."""
    api_version = {"Docker-Distribution-API-Version": _header("registry/2.0", enum=["registry/2.0"])}
    manifest_types = [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
    manifest = {t: {"schema": {"type": "object"}} for t in manifest_types}
    forwarded = {
        "307": {
            "description": "forwarded to artifacts.installer.external",
            "headers": {"Location": _header("URL")},
        }
    }
    image = _path("image", "installer, installer-base, …")
    digest = _path("digest", "a digest, sha256:<hex>")
    reference = _path("reference", "a tag or a digest")

    def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            method: {
                "tags": ["registry"],
                "summary": summary,
                "responses": {**responses, **_registry_errors()},
                **extra,
            }
            for method in ("get", "head")
        }

    spec.path(
        path="/v2/",
        operations={
            method: {
                "tags": ["registry"],
                "summary": "API version check",
                "responses": {"200": _json("an empty object", {"type": "object"}, api_version)},
            }
            for method in ("get", "head")
        },
    )
    blob = {
        "200": {
            "description": "the blob",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
    tags = _json(
        "the repository's tags",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            },
        },
    )
    referrers = {
        "200": {
            "description": "an OCI index of the referrers (``?artifactType=`` filters)",
            "content": {"application/vnd.oci.image.index.v1+json": {"schema": {"type": "object"}}},
        }
    }
    artifact_type = [{"in": "query", "name": "artifactType", "schema": {"type": "string"}}]
    for prefix, first, about in (
        ("/v2/{image}/{schematic}", SCHEMATIC, "an installer image built on pull for a schematic"),
        ("/v2/siderolabs/{image}", None, "a source image proxied from artifacts.core"),
    ):
        common = [image] + ([first] if first else [])
        spec.path(
            path=f"{prefix}/manifests/{{reference}}",
            parameters=[*common, reference],
            operations=op(
                f"A manifest of {about}",
                {"200": {"description": "the manifest", "content": manifest}, **forwarded},
            ),
        )
        spec.path(
            path=f"{prefix}/blobs/{{digest}}",
            parameters=[*common, digest],
            operations=op(f"A blob of {about}", {**blob, **forwarded}),
        )
        spec.path(
            path=f"{prefix}/referrers/{{digest}}",
            parameters=[*common, digest],
            operations=op(f"The referrers of {about}", {**referrers, **forwarded}, parameters=artifact_type),
        )
        spec.path(
            path=f"{prefix}/tags/list",
            parameters=common,
            operations=op(f"The tags of {about}", {"200": tags, **forwarded}),
        )


@functools.cache
def document() -> dict[str, Any]:
    spec = APISpec(
        title="Talos Image Factory",
        version=FACTORY_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Builds Talos Linux boot assets on demand. Errors are plain text (a message "
            "and a newline) except under /v2, where they are the registry API's JSON errors.",
            "license": {"name": "MPL-2.0", "identifier": "MPL-2.0"},
        },
    )
    for name, schema in (
        ("Schematic", SchematicSchema),
        ("SchematicCreated", SchematicCreatedSchema),
        ("BuildStatus", BuildStatusSchema),
        ("Extension", ExtensionSchema),
        ("Overlay", OverlaySchema),
        ("RegistryErrors", RegistryErrorsSchema),
    ):
        spec.components.schema(name, schema=schema)
    for name, description in ERRORS.items():
        spec.components.response(name, _text(description))
    spec.components.response(
        "Unavailable",
        {
            **_text("a dependency is down or busy; retry after Retry-After (plain text)"),
            "headers": {"Retry-After": RETRY_AFTER},
        },
    )
    spec.components.response(
        "RegistryError",
        {
            "description": "a registry API error; 503 carries Retry-After",
            "headers": {"Retry-After": RETRY_AFTER},
            "content": {JSON: {"schema": "RegistryErrors"}},
        },
    )
    _operations(spec)
    doc = spec.to_dict()
    for item in doc["paths"].values():  # Flask answers HEAD wherever it answers GET: the headers alone
        if "get" in item and "head" not in item:
            item["head"] = copy.deepcopy(item["get"])
            if "operationId" in item["head"]:  # unique per operation: getSchematic → headSchematic
                item["head"]["operationId"] = "head" + item["head"]["operationId"].removeprefix("get")
    return doc


@functools.cache
def document_bytes() -> bytes:
    return go_json(document())
