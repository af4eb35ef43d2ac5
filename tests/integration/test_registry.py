"""The ``/v2`` installer frontend through real processes: two gunicorn APIs, two Celery workers, a
private Redis, the session's registry and the fixture release; pulled with Debian's skopeo."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests

from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
PULL_WAIT = 600


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("registry"), redis_server, registry, fixture_release, apis=2, workers=2
    ) as s:
        yield s


def host(stack: Stack, api: int = 0) -> str:
    return stack.apis[api].url.removeprefix("http://")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=PULL_WAIT)


def test_skopeo_inspects_a_multi_arch_index(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=registry-index\n")
    ref = f"docker://{host(stack)}/metal-installer/{sid}:{VERSION}"
    found = skopeo("inspect", "--tls-verify=false", "--raw", ref)
    assert found.returncode == 0, found.stderr
    index = json.loads(found.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]
    base = requests.get(f"{stack.api.url}/v2/", timeout=10)
    assert base.status_code == 200 and base.headers["Docker-Distribution-API-Version"] == "registry/2.0"
