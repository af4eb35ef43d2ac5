"""Cold installer pulls (upstream #456): builds made ahead of the first pull, and a manifest request
that answers 503 + Retry-After instead of outlasting the puller's patience. Real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
ACCEPT = "application/vnd.oci.image.index.v1+json"


def installer_records(stack: Stack, sid: str) -> dict[str, dict[str, str]]:
    found = {}
    for raw in stack.redis.scan_iter("if:build:rec:*"):
        key = raw.decode().removeprefix("if:build:rec:")
        record = stack.record(key)
        request = json.loads(record.get("request") or "{}")
        if request.get("schematic") == sid and request.get("path", "").endswith(".tar"):
            found[request["path"]] = {**record, "key": key}
    return found


def test_installers_are_built_when_the_schematic_is_created(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    overrides = {"build.prebuildInstallers": ["latest"]}
    with factory_stack(tmp_path, None, registry, fixture_release, apis=1, workers=2, **overrides) as stack:
        sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=prebuild\n")
        deadline = time.monotonic() + 300
        records: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            records = installer_records(stack, sid)
            if len(records) == 2 and all(r["status"] == "succeeded" for r in records.values()):
                break
            time.sleep(0.5)
        # `latest` is the newest stable fixture version; nobody pulled anything yet
        assert set(records) == {"installer-amd64.tar", "installer-arm64.tar"}, records
        assert {r["status"] for r in records.values()} == {"succeeded"}
        assert {json.loads(r["request"])["version"] for r in records.values()} == {VERSION}
        started = time.perf_counter()
        pulled = requests.get(
            f"{stack.api.url}/v2/metal-installer/{sid}/manifests/{VERSION}",
            headers={"Accept": ACCEPT},
            timeout=60,
        )
        assert pulled.status_code == 200, pulled.text
        assert time.perf_counter() - started < 30  # publication only, no build
        assert [m["platform"]["architecture"] for m in pulled.json()["manifests"]] == ["amd64", "arm64"]
        assert all(stack.runs(r["key"]) == 1 for r in records.values())  # the pull built nothing more


def test_a_cold_pull_answers_503_with_retry_after_before_the_puller_gives_up(
    tmp_path: Path, registry: RegistryServer, fixture_release: Release
) -> None:
    """No worker runs, so the builds cannot finish within ``build.registryWaitTimeout``: the request
    answers a registry 503 with Retry-After in time, and the builds stay queued for the retry."""
    overrides = {"build.registryWaitTimeout": "2s"}
    with factory_stack(tmp_path, None, registry, fixture_release, apis=1, workers=0, **overrides) as stack:
        sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=cold-503\n")
        started = time.perf_counter()
        answer = requests.get(
            f"{stack.api.url}/v2/metal-installer/{sid}/manifests/{VERSION}",
            headers={"Accept": ACCEPT},
            timeout=60,
        )
        elapsed = time.perf_counter() - started
        assert answer.status_code == 503, answer.text
        assert 2 <= elapsed < 20
        (error,) = answer.json()["errors"]
        assert error["code"] == "UNAVAILABLE" and "still being built" in error["message"]
        assert 5 <= int(answer.headers["Retry-After"]) <= 30
        records = installer_records(stack, sid)
        assert set(records) == {"metal-installer-amd64.tar", "metal-installer-arm64.tar"}
        assert {r["status"] for r in records.values()} == {"queued"}
