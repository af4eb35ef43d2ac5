"""Build and run the factory's container image with podman, on machines without a Docker engine or registry.

What works here (shared/reference/test-stack.md §9): ``podman build --isolation chroot`` (the default
isolation cannot create containers in this sandbox) and ``podman --runtime runc run --network host`` with a
``containers.conf`` whose ``[containers]`` section sets ``default_ulimits = []``. No public registry is
reachable, so the Dockerfile's ``BASE_IMAGE`` is a Debian bookworm made locally with ``mmdebstrap
--variant=minbase`` and ``podman import``; both stay in podman's storage, so later builds reuse the base
and every unchanged layer (``--layers``).

    python -m devstack.container build     # prints the build time and the image size
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.debian import cache_dir
from devstack.services import ensure_system_packages

__all__ = [
    "BASE_IMAGE",
    "IMAGE",
    "REPO_ROOT",
    "BuildResult",
    "build_image",
    "containers_conf",
    "ensure_base_image",
    "image_size",
    "podman",
    "remove_labelled",
    "run_argv",
    "write_wrapper",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian:bookworm"
IMAGE = "localhost/image-factory:dev"
#: The host's CA bundle, handed to pip in the build stage as a secret (never stored in a layer).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = {
    "podman": "podman",
    "buildah": "buildah",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "newuidmap": "uidmap",
}
#: Container uid/gid 1000 (the image's user) is the host's root, everything else is shifted out of the way:
#: the non-root process in the container can read the root-owned, 0600/0700 state of a test session that
#: is bind-mounted in, and what it writes there belongs to the host user that started it.
ID_MAPS = ("0:1:1000", "1000:0:1", "1001:1001:64535")


@dataclass(frozen=True)
class BuildResult:
    image: str
    seconds: float
    size_bytes: int


def containers_conf() -> Path:
    """A ``containers.conf`` that lets ``podman run`` work here: no rlimits it may not set, and runc (also
    for podman-compose, which calls plain ``podman``)."""
    path = cache_dir() / "containers.conf"
    text = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def podman(*args: str, check: bool = True, timeout: float | None = 1800) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with runc and our containers.conf; output captured."""
    env = {**os.environ, "CONTAINERS_CONF": str(containers_conf())}
    proc = subprocess.run(
        ["podman", "--runtime", "runc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"podman {shlex.join(args)} failed ({proc.returncode}):\n{tail}")
    return proc


def _image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def ensure_base_image(name: str = BASE_IMAGE) -> str:
    """``name`` in podman's storage: a minimal Debian bookworm from mmdebstrap (about 30 s, once)."""
    ensure_system_packages(TOOLS)
    if not _image_exists(name):
        with tempfile.TemporaryDirectory(prefix="if-base-") as tmp:
            tar = Path(tmp) / "base.tar"
            subprocess.run(
                ["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(tar)],
                check=True,
                capture_output=True,
            )
            podman("import", str(tar), name)
    return name


def image_size(name: str) -> int:
    data = json.loads(podman("image", "inspect", name).stdout)
    return int(data[0]["Size"])


def build_image(tag: str = IMAGE, *, base: str | None = None, context: Path = REPO_ROOT) -> BuildResult:
    """Build the repository's Dockerfile as ``tag`` on the local base image; layers are cached."""
    base = base or ensure_base_image()
    args = ["build", "--isolation", "chroot", "--layers", "--build-arg", f"BASE_IMAGE={base}"]
    if CA_BUNDLE.exists():
        args += ["--secret", f"id=pip-cert,src={CA_BUNDLE}"]
    args += ["-f", str(context / "Dockerfile")]
    started = time.monotonic()
    podman(*args, "-t", tag, str(context))
    seconds = time.monotonic() - started
    # Keep the build stage tagged (its layers, the dependencies above all, are the next build's cache),
    # then drop what earlier builds left untagged: only images carrying the Dockerfile's title labels.
    podman(*args, "--target", "build", "-t", f"{tag}-build-stage", str(context))
    for title in ("image-factory", "image-factory-build"):
        podman(
            "image", "prune", "-f", "--filter", f"label=org.opencontainers.image.title={title}", check=False
        )
    return BuildResult(tag, seconds, image_size(tag))


def run_argv(
    image: str,
    args: Sequence[str] = (),
    *,
    mounts: Iterable[Path] = (),
    label: str | None = None,
    entrypoint: str | None = None,
) -> list[str]:
    """The ``podman run`` command line for ``image ARGS`` on the host network, each of ``mounts`` bound
    at its own path, the container's user mapped to the host's (``ID_MAPS``)."""
    argv = ["podman", "--runtime", "runc", "run", "--rm", "--network", "host"]
    for mapping in ID_MAPS:
        argv += ["--uidmap", mapping, "--gidmap", mapping]
    for path in mounts:
        argv += ["-v", f"{path}:{path}"]
    if label:
        argv += ["--label", label]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return [*argv, image, *args]


def write_wrapper(path: Path, image: str, *, mounts: Iterable[Path], label: str) -> Path:
    """An executable ``image-factory`` stand-in that runs the image's CLI with its arguments, so the
    devstack process classes (``devstack.factory.FactoryAPI``/``FactoryWorker``) start containers."""
    command = shlex.join(run_argv(image, mounts=mounts, label=label))
    path.write_text(
        f'#!/bin/sh\nexport CONTAINERS_CONF={shlex.quote(str(containers_conf()))}\nexec {command} "$@"\n'
    )
    path.chmod(0o755)
    return path


def remove_labelled(label: str) -> None:
    """Remove the containers carrying ``label`` (ours), e.g. after their podman process was killed."""
    ids = podman("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "5", *ids, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the factory image with podman on a local Debian base."
    )
    parser.add_argument("action", choices=["build"])
    parser.add_argument("--tag", default=IMAGE)
    args = parser.parse_args(argv)
    result = build_image(args.tag)
    print(f"{result.image}: built in {result.seconds:.1f} s, {result.size_bytes / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
