"""``docker-compose.yml`` brought up for real with podman-compose, seeded, and an ISO built through it.

devstack/compose.py builds the factory image and local stand-ins for the redis, registry and SeaweedFS
images (no public registry is reachable here), runs ``podman-compose up -d``, pushes the fixture release
and creates the bucket. The ISO is requested from one API replica after the schematic was created on
the other; a worker builds it, and the API redirects to the stack's S3 endpoint (presigned), which curl
follows. The compose file's published ports are variables (``API1_PORT`` …, defaults 8080, 8081, 5000,
8333); the test publishes on free ports instead, so it never meets a service that happens to run.
Measured under load on the 2-core machine: up + seed ~160 s (images cached), ISO ~12 s, down ~17 s.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from devstack.compose import COMPOSE_FILE, Ports, down, up
from devstack.container import IMAGE, podman
from devstack.services import free_port

# up + seed took 119 s alone and over 300 s beside the other xdist worker (a CI run on 2 cores)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

VERSION = "v1.12.4"


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(api1=free_port(), api2=free_port(), registry=free_port(), s3=free_port())


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory, ports: Ports) -> Iterator[dict[str, str]]:
    variables: dict[str, str] = {}
    try:
        variables = up(tmp_path_factory.mktemp("compose-seed"), ports=ports, versions=[VERSION])
        yield variables
    finally:
        down(variables or ports.variables())


def test_compose_file_declares_the_stack() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert set(services) == {"redis", "registry", "s3", "api-1", "api-2", "worker-1", "worker-2"}


def test_stack_runs_two_apis_two_workers_and_builds_an_iso(
    compose_stack: dict[str, str], ports: Ports, tmp_path: Path
) -> None:
    running = podman(
        "ps", "--filter", "label=io.podman.compose.project=image-factory", "--format", "json"
    ).stdout
    states = {c["Labels"]["io.podman.compose.service"]: c["State"] for c in json.loads(running)}
    assert states == dict.fromkeys(
        ("redis", "registry", "s3", "api-1", "api-2", "worker-1", "worker-2"), "running"
    )
    images = {c["Labels"]["io.podman.compose.service"]: c["Image"] for c in json.loads(running)}
    assert images["api-1"] == images["worker-2"] == compose_stack["FACTORY_IMAGE"] == IMAGE
    api_urls = ports.api_urls
    for url in api_urls:
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200

    body = b"customization:\n  extraKernelArgs:\n    - compose=yes\n"
    created = requests.post(f"{api_urls[1]}/schematics", data=body, timeout=30)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    # Built by a worker, stored in S3 by it, answered by the other API with a presigned redirect.
    asset = requests.get(
        f"{api_urls[0]}/image/{sid}/{VERSION}/metal-amd64.iso", allow_redirects=False, timeout=600
    )
    assert asset.status_code == 302, asset.text[:500]
    location = asset.headers["Location"]
    assert location.startswith("http://s3:8333/image-factory/"), location
    iso = tmp_path / "metal-amd64.iso"
    # curl connects "s3:8333" to the published port, so the signed Host stays "s3:8333".
    connect_to = f"s3:8333:127.0.0.1:{ports.s3}"
    curl = subprocess.run(
        ["curl", "-sS", "-f", "--connect-to", connect_to, "-o", str(iso), location],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert curl.returncode == 0, curl.stderr
    assert iso.read_bytes()[0x8001:0x8006] == b"CD001"
    extracted = tmp_path / "grub.cfg"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/boot/grub/grub.cfg", str(extracted)],
        capture_output=True,
        check=True,
    )
    assert "compose=yes" in extracted.read_text()
    # Changing the signed URL is refused: the S3 endpoint really checks signatures.
    tampered = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--connect-to",
            connect_to,
            location[:-4] + "0000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tampered.stdout == "403"
