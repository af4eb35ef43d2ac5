"""A hostile source registry (issue 18): endless, trickling and stalled blobs, a manifest that never
ends, a decompression bomb layer, served by a real HTTP server (``tests/support/hostile_registry.py``)
in front of the session's docker-registry, which holds the fixture release's real, signed images.

- The registry client alone: each misbehaviour is refused within its bound (``ReadLimits``), and the
  server sees the client hang up on time.
- Through the real factory (gunicorn API, Celery workers): every client asking for an image that
  uses a hostile extension gets 502 naming the image and the reason, within the configured bound;
  nothing is left behind (no unpacked tree, no scratch, no published asset); a client asking at the
  same time for an image with a good extension gets its asset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from common.config.options import RepositoryOptions
from common.errors import BadSourceError, UnavailableError
from common.registry.client import HostileSourceError, ReadLimits, RegistryClient, RegistryError
from common.talos.version import Version
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.artifacts import manager
from tests.support.hostile_registry import HOSTILE_EXTENSIONS, Behaviour, HostileRegistry, hostile_release
from tests.support.stack import factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
MiB = 1024 * 1024
READ_TIME = 4.0  # artifacts.limits.maxReadTime of these tests
IDLE = 2.0  # artifacts.limits.idleTimeout


def _timed(call: object) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_the_registry_client_refuses_hostile_answers_within_its_bounds(registry: RegistryServer) -> None:
    direct = RegistryClient(
        RepositoryOptions(
            registry=registry.host, namespace="hostile-client", repository="blobs", insecure=True
        )
    )
    blobs = {name: os.urandom(4096) for name in ("endless", "trickle", "stall", "good")}
    digests = {name: direct.push_blob(data) for name, data in blobs.items()}
    giant = "sha256:" + hashlib.sha256(b"giant").hexdigest()
    path = "/v2/hostile-client/blobs"
    with HostileRegistry(registry.host) as hostile:
        hostile.behaviours = {
            f"{path}/blobs/{digests['endless']}": Behaviour("endless"),
            f"{path}/blobs/{digests['trickle']}": Behaviour("trickle", interval=0.2),
            f"{path}/blobs/{digests['stall']}": Behaviour("stall"),
            f"{path}/manifests/{giant}": Behaviour("giant"),
            f"{path}/manifests/latest": Behaviour("giant", status=400),  # an error that never ends
        }
        client = RegistryClient(
            RepositoryOptions(
                registry=hostile.host, namespace="hostile-client", repository="blobs", insecure=True
            ),
            ReadLimits(idle_timeout=IDLE, max_read_time=READ_TIME),
        )

        def read(name: str) -> bytes:
            return b"".join(client.stream_blob(digests[name], size=4096))

        assert read("good") == blobs["good"]

        error, seconds = _timed(lambda: read("endless"))
        assert isinstance(error, HostileSourceError) and error.status == 502, error
        assert str(error) == (
            f"registry {hostile.host}: hostile-client/blobs blob {digests['endless']} sent more than the "
            "4096 bytes its descriptor gives: refused"
        )
        assert seconds < 2.0 and hostile.finished(f"{path}/blobs/{digests['endless']}").seconds < 2.0

        error, _ = _timed(lambda: client.get_blob(digests["endless"], 64 * 1024))
        assert isinstance(error, HostileSourceError) and "is larger than the 65536 bytes allowed" in str(
            error
        )

        error, seconds = _timed(lambda: read("trickle"))
        assert isinstance(error, HostileSourceError), error
        assert f"blob {digests['trickle']} was still arriving after 4 s" in str(error)
        assert READ_TIME <= seconds < READ_TIME + 1.5
        served = hostile.finished(f"{path}/blobs/{digests['trickle']}")
        assert served.sent < 4096 and served.seconds < READ_TIME + 1.5

        error, seconds = _timed(lambda: client.get_manifest(giant))
        assert isinstance(error, HostileSourceError), error
        assert f"manifest {giant} is larger than the 4194304 bytes allowed" in str(error)
        assert seconds < 3.0
        assert hostile.finished(f"{path}/manifests/{giant}").seconds < 2.0  # hung up at once

        error, seconds = _timed(lambda: client.get_manifest("latest"))
        assert isinstance(error, RegistryError), error
        assert str(error).startswith('registry refused GET manifest latest: 400 {"schemaVersion":2,'), error
        assert seconds < 2.0 and hostile.finished(f"{path}/manifests/latest").seconds < 2.0

        error, seconds = _timed(lambda: read("stall"))
        assert isinstance(error, UnavailableError) and error.status == 503, error
        assert f"blob {digests['stall']}: nothing arrived for 2 s" in str(error)
        assert IDLE <= seconds < IDLE + 1.5


def test_hostile_extensions_are_502_within_the_bounds_and_leave_nothing_behind(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    hostile = hostile_release(registry, fixture_release, VERSION, bomb=512 * MiB)  # 2 x maxLayerSize
    with HostileRegistry(registry.host) as proxy:
        proxy.behaviours = {
            hostile.blob_path("endless-ext"): Behaviour("endless"),
            hostile.blob_path("trickle-ext"): Behaviour("trickle", interval=0.2),
            hostile.index_path("giant-ext"): Behaviour("giant"),
        }
        release = dataclasses.replace(hostile.release, registry=proxy.host)
        limits: dict[str, Any] = {
            "artifacts.limits.maxReadTime": f"{READ_TIME:g}s",
            "artifacts.limits.idleTimeout": f"{IDLE:g}s",
            "artifacts.limits.maxLayerSize": 256 * MiB,
            "artifacts.limits.maxImageSize": 512 * MiB,
        }
        with factory_stack(tmp_path, None, registry, release, workers=2, **limits) as stack:
            urls = {}
            for name in HOSTILE_EXTENSIONS:
                sid = stack.create_schematic(
                    f"customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/{name}]\n"
                )
                urls[name] = f"{stack.api.url}/image/{sid}/{VERSION}/initramfs-amd64.xz"
            answers: dict[str, tuple[int, bytes, float]] = {}
            start = threading.Barrier(len(urls))

            def get(name: str) -> None:
                start.wait()
                began = time.monotonic()
                response = requests.get(urls[name], timeout=300)
                answers[name] = (response.status_code, response.content, time.monotonic() - began)

            threads = [threading.Thread(target=get, args=(name,)) for name in urls]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(320)

            status, body, _ = answers["good-ext"]
            assert status == 200 and body.startswith(b"\x28\xb5\x2f\xfd"), body[:200]  # zstd from 1.8

            def refused(name: str) -> str:
                status, text, _ = answers[name]
                assert status == 502, (name, status, text[:500])
                message = text.decode()
                assert message.startswith(f"image {hostile.image(proxy.host, name)}: "), message
                return message

            bomb = refused("bomb-ext")
            assert f": layer {hostile.layers['bomb-ext']}: layer entry " in bomb, bomb
            assert "'rootfs/usr/local/share/bomb-ext/README.zeros' declares 536870912 bytes" in bomb
            assert bomb.endswith(" left of artifacts.limits.maxLayerSize: refused\n"), bomb
            endless = refused("endless-ext")
            assert f"blob {hostile.layers['endless-ext']} sent more than the" in endless, endless
            assert "bytes its descriptor gives: refused" in endless
            trickle = refused("trickle-ext")
            assert f"blob {hostile.layers['trickle-ext']} was still arriving after 4 s" in trickle, trickle
            assert proxy.finished(hostile.blob_path("trickle-ext")).seconds < READ_TIME + 2
            assert proxy.finished(hostile.blob_path("endless-ext")).seconds < 5
            giant = answers["giant-ext"]
            assert giant[0] == 502 and b"is larger than the 4194304 bytes allowed: refused" in giant[1], giant
            assert proxy.finished(hostile.index_path("giant-ext")).seconds < 5

            # nothing left behind: no unpacked tree or blob of a hostile image, empty scratch, and each
            # failure remembered (failed, 502), never published
            kept = set(os.listdir(tmp_path / "artifacts" / "entries"))
            for name in ("bomb-ext", "endless-ext", "trickle-ext", "giant-ext"):
                assert "tree-" + hostile.manifests[name].replace(":", "-") not in kept, name
                assert "blob-" + hostile.layers[name].replace(":", "-") not in kept, name
            assert "tree-" + hostile.manifests["good-ext"].replace(":", "-") in kept
            building = [p.name for p in (tmp_path / "artifacts" / "tmp").iterdir()]
            assert not [n for n in building if any(hostile.manifests[e].split(":")[1] in n for e in urls)], (
                building
            )
            assert not list((tmp_path / "scratch").iterdir()), list((tmp_path / "scratch").rglob("*"))
            keys = [k.decode().removeprefix("if:build:rec:") for k in stack.redis.scan_iter("if:build:rec:*")]
            records = [stack.record(key) for key in keys]
            failed = sorted(r["errorStatus"] for r in records if r["status"] == "failed")
            assert failed == ["502"] * 4 and [r["status"] for r in records].count("succeeded") == 1, records
            for name, (_, _, seconds) in answers.items():
                assert seconds < 120, (name, seconds)

            # the source proxy (/v2/siderolabs/...) cuts a trickling blob off at the same bound
            began = time.monotonic()
            relayed = requests.get(
                f"{stack.api.url}/v2/siderolabs/trickle-ext/blobs/{hostile.layers['trickle-ext']}", timeout=60
            )
            assert relayed.status_code == 200
            assert time.monotonic() - began < READ_TIME + 3
            assert 0 < len(relayed.content) < 100  # a byte per 0.2 s for READ_TIME seconds
            print({name: round(seconds, 1) for name, (_, _, seconds) in answers.items()})  # for the record


def test_the_extension_images_of_one_build_are_bounded_together(
    fixture_release: Release, tmp_path: Path
) -> None:
    """``artifacts.limits.maxBuildEntries``/``maxBuildSize`` (``ArtifactsManager.build_budget``, which
    the worker opens around every build): each image fits on its own, the second one of the build
    does not, and is refused naming both; outside a build nothing counts."""
    m, _ = manager(fixture_release, tmp_path / "store")
    by_name = {e.name: e for e in m.official_extensions(Version.parse("1.12.4"))}
    first, second = by_name["siderolabs/hello-world"], by_name["siderolabs/dummy-module"]
    with m.extension(first, "amd64") as one, m.extension(second, "amd64") as two:
        assert one.entries > 0 and one.size > one.entries * 512  # tar headers at least
        assert two.entries > 0
    m.limits.maxBuildEntries = one.entries + two.entries - 1
    with m.extension(first, "amd64"), m.extension(second, "amd64"):
        pass  # no build: no budget
    with (
        m.build_budget(),
        m.extension(first, "amd64"),
        pytest.raises(BadSourceError) as caught,
        m.extension(second, "amd64"),
    ):
        pass
    assert caught.value.status == 502
    assert str(caught.value) == (
        f"the extension and overlay images of this build ({m.client(first.ref.repository).repo.reference}"
        f"@{first.digest}, {m.client(second.ref.repository).repo.reference}@{second.digest}) hold "
        f"{one.entries + two.entries} entries, more than {one.entries + two.entries - 1} "
        "(artifacts.limits.maxBuildEntries): refused"
    )
    m.limits.maxBuildEntries, m.limits.maxBuildSize = 10**9, one.size
    with (
        m.build_budget(),
        m.extension(first, "amd64"),
        pytest.raises(BadSourceError, match=r"artifacts.limits.maxBuildSize\): refused"),
        m.extension(second, "amd64"),
    ):
        pass
