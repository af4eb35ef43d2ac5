"""Fuzz POST /schematics over HTTP: never a 500, and every 201 is self-consistent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.services import RedisServer, RegistryServer
from tests.support.factory import FactoryAPI, api_server, factory_config

pytestmark = pytest.mark.integration

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
scalar = st.one_of(text, st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.none())
option_values = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
customization = st.fixed_dictionaries(
    {},
    optional={
        "extraKernelArgs": st.lists(text | st.integers(), max_size=4),
        "meta": st.lists(st.fixed_dictionaries({"key": st.integers(-5, 300), "value": text}), max_size=3),
        "systemExtensions": st.fixed_dictionaries(
            {}, optional={"officialExtensions": st.lists(text, max_size=3)}
        ),
        "bootloader": st.sampled_from(["none", "sd-boot", "GRUB", "dual-boot", "auto", ""]) | text,
        "secureboot": st.fixed_dictionaries(
            {},
            optional={
                "includeWellKnownCertificates": st.booleans() | text,
                "enrollKeys": st.sampled_from(["off", "manual", "if-safe", "force", "bogus"]),
            },
        ),
        "diskImage": st.fixed_dictionaries({}, optional={"sectorSize": st.integers(-1, 2**65)}),
        "embeddedMachineConfiguration": text,
        "unknownField": text,
    },
)
schematic_doc = st.fixed_dictionaries(
    {},
    optional={
        "customization": customization,
        "overlay": st.fixed_dictionaries(
            {},
            optional={
                "name": text,
                "image": text,
                "options": st.dictionaries(text, option_values, max_size=4),
            },
        ),
    },
)


def render(doc: dict[str, Any], as_json: bool) -> bytes:
    if as_json:
        return json.dumps(doc, allow_nan=True).encode()
    return yaml.safe_dump(doc, allow_unicode=True).encode()


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, registry: RegistryServer
) -> Iterator[FactoryAPI]:
    with api_server(
        tmp_path_factory.mktemp("fuzz-api"), factory_config(redis_server.url, registry.host)
    ) as server:
        yield server


def check(api: FactoryAPI, session: requests.Session, body: bytes) -> None:
    response = session.post(f"{api.url}/schematics", data=body, timeout=30)
    assert response.status_code in (201, 400), (body, response.status_code, response.text)
    assert response.text.endswith("\n")
    if response.status_code == 201:
        data = response.json()
        assert data["id"] == hashlib.sha256(data["schematic"].encode()).hexdigest()
        again = session.get(f"{api.url}/schematics/{data['id']}", timeout=30)
        assert (again.status_code, again.content) == (200, data["schematic"].encode())
    else:
        assert response.text.strip(), body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=schematic_doc, as_json=st.booleans())
def test_structured_documents(api: FactoryAPI, doc: dict[str, Any], as_json: bool) -> None:
    with requests.Session() as session:
        check(api, session, render(doc, as_json))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | text.map(str.encode))
def test_arbitrary_bytes(api: FactoryAPI, body: bytes) -> None:
    with requests.Session() as session:
        check(api, session, body)
