"""The repository's Dockerfile, built for real with podman and run: ``config``, the API and a worker.

The image is built once per session on a local Debian base (devstack/container.py: mmdebstrap + podman
import, since no public registry is reachable); podman keeps its layers, so a warm rebuild after a code
change redoes only the last steps. Measured on the shared 2-core machine (load 20): base image 28 s
(once), cold build 77-127 s, cached build 20-40 s, image 549 MB (Debian minbase 170 MB, Python and the
imager's tools 158 MB, the virtualenv 161 MB); the module 189 s, of which 127 s set up the fixture release
and the containers (the release is the session's, shared with the other integration tests) and 19 s
build and fetch the ISO.

The API and the worker run from the image (``podman run --network host``) against this session's
registry (the fixture release) and a private redis-server, through the same process classes the other
integration tests use (devstack.factory), with a wrapper in place of the ``image-factory`` console script.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from devstack.container import (
    IMAGE,
    BuildResult,
    build_image,
    podman,
    remove_labelled,
    run_argv,
    write_wrapper,
)
from devstack.factory import (
    DEFAULT_FACTORY_BIN,
    FactoryAPI,
    FactoryWorker,
    default_signing_key,
    factory_config,
    write_config,
)
from devstack.release.release import Release, factory_overrides
from devstack.services import LOOPBACK, RedisServer, RegistryServer, free_port

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
BUILD_WAIT = 600
#: Tools the worker's imager runs (worker/imager), by the Debian package the Dockerfile installs.
IMAGER_TOOLS = (
    "xorrisofs", "grub-mkrescue", "grub-mkimage", "mkfs.vfat", "mcopy", "mmd", "mattrib", "tar2sqfs",
    "mksquashfs", "unsquashfs", "cpio", "mkfs.xfs", "pigz", "qemu-img", "xz", "zstd", "depmod",
)  # fmt: skip
#: LD_PRELOADed around mkfs.xfs (worker/imager/disk.py _FAKETIME_LIBS).
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


@pytest.fixture(scope="session")
def image() -> BuildResult:
    # The tag is kept after the session: removing it would drop its layers, the next run's cache.
    result = build_image(IMAGE)
    print(f"\nimage {result.image}: built in {result.seconds:.1f} s, {result.size_bytes / 1e6:.0f} MB")
    return result


def _run(image: BuildResult, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = run_argv(image.image, args, entrypoint=entrypoint)
    return podman(*argv[3:], check=False, timeout=300)  # argv[:3] is "podman --runtime runc"


def test_image_runs_as_uid_1000_with_the_imager_tools_and_no_build_tools(image: BuildResult) -> None:
    script = (
        "id -u; id -g; "
        + " ".join(f"command -v {tool} >/dev/null || echo missing:{tool};" for tool in IMAGER_TOOLS)
        + f" test -f {FAKETIME_LIB} || echo missing:libfaketime;"
        " for t in gcc cc g++ make pip pip3; do command -v $t && echo present:$t; done;"
        " ls /src 2>/dev/null && echo present:/src;"
        " python3 -c 'import devstack' 2>/dev/null && echo present:devstack;"
        " python3 -c 'import tests.support' 2>/dev/null && echo present:tests;"
        " python3 -c 'import image_factory, api, worker, common; print(\"ok\")'"
    )
    proc = _run(image, "-c", script, entrypoint="sh")
    lines = proc.stdout.split()
    assert proc.returncode == 0, proc.stderr
    assert lines[:2] == ["1000", "1000"]
    assert [line for line in lines if line.startswith(("missing:", "present:"))] == []
    assert lines[-1] == "ok"
    config = yaml.safe_load(podman("image", "inspect", image.image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["image-factory"]


def test_config_prints_the_defaults(image: BuildResult) -> None:
    proc = _run(image, "config")
    assert proc.returncode == 0, proc.stderr
    # The same defaults as the checkout's own CLI (the same code, installed in the image's virtualenv).
    host = subprocess.run([DEFAULT_FACTORY_BIN, "config"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(proc.stdout) == yaml.safe_load(host.stdout)
    assert yaml.safe_load(proc.stdout)["http"]["httpListenAddr"] == ":8080"


@pytest.fixture
def containers(
    image: BuildResult,
    registry: RegistryServer,
    fixture_release: Release,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FactoryAPI, FactoryWorker, str]]:
    """An API and a worker, each a container of ``image``, sharing a private redis-server."""
    root = tmp_path_factory.mktemp("container-stack")
    label = f"image-factory-test={uuid.uuid4().hex[:12]}"
    key = default_signing_key()
    wrapper = write_wrapper(
        root / "image-factory", image.image, mounts=[tmp_path_factory.getbasetemp(), key.parent], label=label
    )
    port, metrics_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        stack.callback(remove_labelled, label)
        redis = stack.enter_context(RedisServer(root / "redis"))
        config = factory_config(
            redis.url,
            registry.host,
            port=port,
            **factory_overrides(fixture_release),
            **{
                "cache.oci.repository": f"cache-{uuid.uuid4().hex[:12]}",
                "artifacts.storageDir": str(root / "artifacts"),
                "build.scratchDir": str(root / "scratch"),
                "http.workers": 1,
            },
        )
        api_config, worker_config = root / "api.yaml", root / "worker.yaml"
        write_config(api_config, config)
        write_config(worker_config, {**config, "metrics": {"addr": f"{LOOPBACK}:{metrics_port}"}})
        api = stack.enter_context(FactoryAPI(str(wrapper), api_config, root, port, root / "api.log"))
        worker = stack.enter_context(FactoryWorker(str(wrapper), worker_config, root, 0, root / "worker.log"))
        yield api, worker, f"http://{LOOPBACK}:{metrics_port}/metrics"


def test_api_and_worker_from_the_image_build_and_serve_an_iso(
    containers: tuple[FactoryAPI, FactoryWorker, str], tmp_path: Path
) -> None:
    api, worker, worker_metrics = containers
    assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{api.url}/readyz", timeout=10).status_code == 200
    # The web UI's templates, static files and translations are in the installed package (package-data).
    page = requests.get(f"{api.url}/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), page.text[:300]
    body = b"customization:\n  extraKernelArgs:\n    - container=podman\n"
    created = requests.post(f"{api.url}/schematics", data=body, timeout=30)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    iso = tmp_path / "metal-amd64.iso"
    with requests.get(
        f"{api.url}/image/{sid}/{VERSION}/metal-amd64.iso", stream=True, timeout=BUILD_WAIT
    ) as r:
        assert r.status_code == 200, r.text[:500]
        with iso.open("wb") as fh:
            for chunk in r.iter_content(1 << 20):
                fh.write(chunk)
    data = iso.read_bytes()
    assert data[0x8001:0x8006] == b"CD001", "not an ISO 9660 image"
    # An independent reader: xorriso lists the ISO's boot files, with our kernel argument in GRUB's config.
    listing = subprocess.run(
        ["xorriso", "-indev", str(iso), "-find", "/", "-type", "f"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/boot/vmlinuz" in listing or "vmlinuz" in listing, listing[:2000]
    grub = subprocess.run(
        [
            "xorriso",
            "-osirrox",
            "on",
            "-indev",
            str(iso),
            "-extract",
            "/boot/grub/grub.cfg",
            str(tmp_path / "grub.cfg"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert grub.returncode == 0, grub.stderr[-2000:]
    assert "container=podman" in (tmp_path / "grub.cfg").read_text()
    # The build ran in the worker's container: its metrics endpoint counted it.
    metrics = requests.get(worker_metrics, timeout=10).text
    built = [
        line
        for line in metrics.splitlines()
        if line.startswith('image_factory_builds_finished_total{outcome="built"}')
    ]
    assert built and float(built[0].split()[-1]) >= 1, [
        line for line in metrics.splitlines() if "builds" in line
    ][:20]
    assert worker.running
