"""``image-factory mirror`` for tests: the fixture release copied out of a stoppable source registry.

The source is a private docker-registry over a hard-linked copy of the session registry's storage
(instant; distribution only ever adds files under new names, so the copy is never written through), so
that it can be stopped, leaving the mirror as the only place a second factory can pull from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from common.config.options import RepositoryOptions
from common.registry.client import RegistryClient
from devstack.factory import DEFAULT_FACTORY_BIN
from devstack.release.release import Release, factory_overrides
from devstack.services import RegistryServer, ensure_system_packages

NAMESPACE = "mirror"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Mirrored:
    source: str  # host of the (by now stopped) source registry
    destination: RegistryServer
    versions: list[str]
    listing: Run  # --list
    first: Run
    second: Run  # the same mirror again

    def client(self, repository: str) -> RegistryClient:
        return RegistryClient(
            RepositoryOptions(
                registry=self.destination.host, namespace=NAMESPACE, repository=repository, insecure=True
            )
        )

    def printed(self) -> dict[str, Any]:
        """The configuration the first run printed, as dotted keys."""
        return dotted(yaml.safe_load(self.first.stdout))

    def stack_arguments(self, release: Release) -> tuple[Release, dict[str, Any]]:
        """``(release, overrides)`` for ``factory_stack`` that configure the release from what mirror
        printed and nothing else (factory_stack derives its release keys from the Release)."""
        printed = self.printed()
        mirrored = dataclasses.replace(
            release,
            registry=printed["artifacts.core.registry"],
            namespace=printed["artifacts.core.namespace"],
            public_key=printed["containerSignature.publicKeyFile"],
            trusted_root=printed["containerSignature.trustedRootFile"],
            broken=[],
        )
        return mirrored, {k: v for k, v in printed.items() if k not in factory_overrides(mirrored)}


def dotted(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_mirror(config: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    done = subprocess.run(
        [str(DEFAULT_FACTORY_BIN), "--log-level", "warn", "--config", str(config), "mirror", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    return Run(done.returncode, done.stdout, done.stderr)


class AuthRegistryServer(RegistryServer):
    """docker-registry that wants HTTP Basic credentials (distribution's ``auth.htpasswd``)."""

    def __init__(self, state_dir: Path, username: str, password: str) -> None:
        super().__init__(state_dir)
        self.username, self.password = username, password

    def prepare(self) -> None:
        super().prepare()
        ensure_system_packages({"htpasswd": "apache2-utils"})
        entry = subprocess.run(
            ["htpasswd", "-Bbn", self.username, self.password], capture_output=True, text=True, check=True
        ).stdout
        htpasswd = self.state_dir / "htpasswd"
        htpasswd.write_text(entry)
        config = json.loads(self.config_path.read_text())
        config["auth"] = {"htpasswd": {"realm": "mirror", "path": str(htpasswd)}}
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/v2/", timeout=0.5).status_code == 401
        except requests.RequestException:
            return False


def source_config(path: Path, registry: str, release: Release, storage: Path) -> Path:
    """A factory configuration whose release source is ``registry`` (verification as the release's)."""
    core = {"registry": registry, "namespace": release.namespace, "insecure": True}
    signature = {
        "disabled": False,
        "publicKeyFile": release.public_key,
        "trustedRootFile": release.trusted_root,
    }
    document = {"artifacts": {"core": core, "storageDir": str(storage)}, "containerSignature": signature}
    path.write_text(yaml.safe_dump(document))
    return path


@contextlib.contextmanager
def mirrored_release(
    root: Path, registry: RegistryServer, release: Release, versions: Sequence[str]
) -> Iterator[Mirrored]:
    """Mirrors ``versions`` of the session's fixture release into a fresh registry (twice, after a
    ``--list``), stops the source, and yields the result; the mirror runs until the context ends."""
    (root / "source").mkdir()
    subprocess.run(["cp", "-al", str(registry.data_dir), str(root / "source" / "data")], check=True)
    with RegistryServer(root / "destination") as destination:
        with RegistryServer(root / "source") as source:
            config = source_config(root / "source.yaml", source.host, release, root / "artifacts")
            listing = run_mirror(config, "--list", *versions)
            to = ["--to", destination.host, "--namespace", NAMESPACE, "--insecure", "--jobs", "4"]
            first = run_mirror(config, *to, *versions)
            second = run_mirror(config, *to, *versions)
            source_host = source.host
        yield Mirrored(source_host, destination, list(versions), listing, first, second)
