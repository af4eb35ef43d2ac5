"""``/openapi.json`` against a live stack (gunicorn API, Celery worker, Redis, registry, S3; the fixture
release): the served document is valid OpenAPI 3.1, known-good requests of every kind answer what
it says, and schemathesis fuzzes every operation (bounded: a few examples each) with 0 server errors
(5xx other than the documented ones) and 0 responses that break the document."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import openapi
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server
from tests.support.secureboot import make_key_pair
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
#: "0 responses that break the document": statuses, media types, headers and bodies as documented.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: The document's own 5xx are answers too; a 5xx it does not list is a server error.
CHECKS = [*CONFORMANCE]
#: The 5xx the document lists and a fuzzer may provoke on purpose-free input. Anything else fails.
DOCUMENTED_5XX = {502, 503}
#: Examples per operation: few, so that the whole module stays near a minute. Set
#: OPENAPI_FUZZ_EXAMPLES to explore: more examples, fresh ones every run.
EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "8"))
DERANDOMIZE = "OPENAPI_FUZZ_EXAMPLES" not in os.environ


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    s3_server: S3Server,
    fixture_release: Release,
) -> Iterator[Stack]:
    keys = tmp_path_factory.mktemp("openapi-keys")
    db, pcr = make_key_pair(keys, "db"), make_key_pair(keys, "pcr")
    # Secure Boot on: /secureboot/signing-cert.pem answers 500 without it, deliberately (upstream's)
    sb: dict[str, Any] = {
        "secureBoot.enabled": True,
        "secureBoot.file.signingKeyPath": str(db.key_path),
        "secureBoot.file.signingCertPath": str(db.cert_path),
        "secureBoot.file.pcrKeyPath": str(pcr.key_path),
    }
    with factory_stack(
        tmp_path_factory.mktemp("openapi"),
        redis_server,
        registry,
        fixture_release,
        apis=1,
        workers=1,
        s3=s3_server,
        **sb,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> Any:
    """The served document, as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{stack.api.url}/openapi.json")


def call(schema: Any, path: str, method: str, **kwargs: Any) -> schemathesis.Response:
    """One known-good request, validated against the document; 5xx fail it."""
    case = schema[path][method].Case(**kwargs)
    response: schemathesis.Response = case.call_and_validate(checks=[*CHECKS, not_a_server_error])
    return response


def header(response: schemathesis.Response, name: str) -> str:
    return response.headers[name.lower()][0]


def test_served_document_is_valid_openapi(stack: Stack) -> None:
    response = requests.get(f"{stack.api.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    validate(response.json())
    assert response.json() == openapi.document()


def test_known_good_requests_conform(stack: Stack, api_schema: Any) -> None:
    created = call(
        api_schema,
        "/schematics",
        "POST",
        body={"customization": {"extraKernelArgs": ["test=openapi"]}},
        media_type="application/yaml",
    )
    assert created.status_code == 201
    sid = created.json()["id"]
    assert (
        call(api_schema, "/schematics/{schematic}", "GET", path_parameters={"schematic": sid}).status_code
        == 200
    )

    image = "/image/{schematic}/{version}/{path}"
    asset = {"schematic": sid, "version": VERSION, "path": "kernel-amd64"}
    # 202 + Location, then the build's status until it is done
    accepted = call(api_schema, image, "GET", path_parameters=asset, headers={"Prefer": "respond-async"})
    assert accepted.status_code in (202, 302), accepted.text
    if accepted.status_code == 202:
        key = header(accepted, "Location").rsplit("/", 1)[-1]
        deadline = time.monotonic() + 300
        while True:
            status = call(api_schema, "/builds/{key}", "GET", path_parameters={"key": key})
            if status.json()["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status.json()["status"] == "succeeded", status.text
    assert call(api_schema, image, "GET", path_parameters=asset).status_code == 302  # S3 holds it
    head = call(api_schema, image, "HEAD", path_parameters=asset)
    assert head.status_code == 200 and int(header(head, "Content-Length")) > 0
    size = int(header(head, "Content-Length"))
    assert (
        call(api_schema, image, "HEAD", path_parameters=asset, headers={"Range": "bytes=0-9"}).status_code
        == 206
    )
    assert (
        call(
            api_schema, image, "HEAD", path_parameters=asset, headers={"Range": f"bytes={size}-"}
        ).status_code
        == 416
    )
    for suffix in (".sha256", ".sha512", ".sigstore.json"):  # the asset's checksums and bundle
        checked = call(api_schema, image, "GET", path_parameters={**asset, "path": "kernel-amd64" + suffix})
        assert checked.status_code == 200

    pxe = call(
        api_schema,
        "/pxe/{schematic}/{version}/{path}",
        "GET",
        path_parameters={**asset, "path": "metal-amd64"},
    )
    assert pxe.status_code == 200 and pxe.text.startswith("#!ipxe")

    versions = call(api_schema, "/versions", "GET")
    assert VERSION in versions.json()
    for kind in ("extensions", "overlays"):
        found = call(
            api_schema, f"/version/{{version}}/{kind}/official", "GET", path_parameters={"version": VERSION}
        )
        assert found.status_code == 200 and found.json(), kind
    assert (
        call(api_schema, "/talosctl/{version}", "GET", path_parameters={"version": VERSION}).status_code
        == 200
    )
    for path in (
        "/oci/cosign/signing-key.pub",
        "/secureboot/signing-cert.pem",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/v2/",
    ):
        assert call(api_schema, path, "GET").status_code == 200, path
    assert call(api_schema, "/readyz", "GET", query={"verbose": ""}).status_code == 200
    tags = call(api_schema, "/v2/siderolabs/{image}/tags/list", "GET", path_parameters={"image": "imager"})
    assert tags.status_code == 200 and tags.json()["tags"]
    missing = call(
        api_schema,
        "/v2/{image}/{schematic}/blobs/{digest}",
        "GET",
        path_parameters={"image": "installer", "schematic": sid, "digest": "sha256:" + "0" * 64},
    )
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"]


def test_stateful_links_from_a_created_schematic_to_its_assets(stack: Stack, api_schema: Any) -> None:
    """schemathesis' state machine follows the document's links: a schematic it created (a fuzzed
    body), then that schematic, its assets and PXE scripts by the id the 201 answered."""
    followed: Counter[tuple[str, int]] = Counter()

    class Links(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"timeout": 60}

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, *_: Any, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
            assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
            )
            followed[(case.operation.label, response.status_code)] += 1

    Links.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=DERANDOMIZE,
        )
    )
    created = followed[("POST /schematics", 201)]
    linked = {label for label, status in followed if label != "POST /schematics" and status < 400}
    assert created and {"GET /schematics/{schematic}", "GET /image/{schematic}/{version}/{path}"} & linked, (
        followed
    )
    # the linked schematic exists: never "not found" through a link
    assert not [key for key in followed if key == ("GET /schematics/{schematic}", 404)], followed


#: The document as this process builds it (the served one is the same: test_served_document_is_valid_openapi).
#: Not ``schemathesis.pytest.from_fixture``: its lazy loader needs ``Node._nodeid``, which pytest 9 removed.
schema = schemathesis.openapi.from_dict(openapi.document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE
)
def test_fuzz_every_operation(stack: Stack, case: schemathesis.Case) -> None:
    response = case.call_and_validate(base_url=stack.api.url, checks=CHECKS, timeout=30)
    assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )
