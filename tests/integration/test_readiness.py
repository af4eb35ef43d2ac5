"""Shared dependencies going away under a running factory (issue 17, "Readiness and health").

One stack in S3 mode with a cache registry and an S3 of its own (the schematic and source registry
is the session's and stays up). With cached assets built, Redis is stopped, then the cache registry,
then S3; then the cache registry comes back, then everything. At every step: ``/readyz`` stays 200
and ``/readyz?verbose`` lists the outage; cached assets are served while their signed entry and
bytes are reachable (in S3 mode the registry entry holds the bytes too, so S3 down is no outage
for them); new builds and whatever else needs the missing dependency answer 503 with
``Retry-After``; nothing answers 500.

Assets are looked up on the second API replica, which has not seen them before each step, so its
few seconds of memory of verified entries (``common.delivery.service.ENTRY_TTL``) do not hide what
the step does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.delivery.service import ENTRY_TTL
from devstack.factory import FactoryAPI
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
IPXE = {"User-Agent": "iPXE/1.21.1"}  # never redirected: the factory streams the bytes itself
ASSETS = ("cmdline-metal-amd64", "cmdline-metal-arm64", "kernel-amd64")


class Client:
    """Requests to one API replica; remembers every answer so that a test can say none was a 500."""

    def __init__(self, api: FactoryAPI) -> None:
        self.url = api.url
        self.answers: list[tuple[str, str, int]] = []

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("allow_redirects", False)
        response = requests.request(method, f"{self.url}{path}", **kwargs)  # type: ignore[arg-type]
        self.answers.append((method, path, response.status_code))
        return response

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def verbose(self) -> dict[str, str]:
        """``/readyz?verbose`` as check name → ``ok`` or ``failed: reason``; asserts it is 200."""
        plain = self.get("/readyz")
        assert (plain.status_code, plain.content) == (200, b""), plain.text
        response = self.get("/readyz?verbose")
        assert response.status_code == 200, response.text
        *checks, last = response.text.splitlines()
        assert last == "readyz check passed"
        found = {}
        for line in checks:
            sign, rest = line[:3], line[3:]
            name, _, state = rest.partition(" ")
            assert (sign == "[+]") == (state == "ok"), line
            found[name] = state
        return found


def unavailable(response: requests.Response, *words: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) > 0
    for word in words:
        assert word in response.text, response.text


@pytest.fixture
def stack(
    tmp_path: Path, redis_server: RedisServer, registry: RegistryServer, fixture_release: Release
) -> Iterator[tuple[Stack, RegistryServer, S3Server]]:
    with (
        RegistryServer(tmp_path / "cache-registry") as cache_registry,
        S3Server(tmp_path / "s3") as s3,
        factory_stack(
            tmp_path / "stack",
            redis_server,
            registry,
            fixture_release,
            apis=2,
            workers=1,
            s3=s3,
            **{"cache.oci.registry": cache_registry.host, "cache.oci.insecure": True},
        ) as s,
    ):
        yield s, cache_registry, s3


def test_outages_leave_the_replica_ready_and_degrade_only_what_needs_them(
    stack: tuple[Stack, RegistryServer, S3Server], registry: RegistryServer
) -> None:
    s, cache_registry, s3 = stack
    assert s.redis_server is not None
    builder, api = Client(s.apis[0]), Client(s.apis[1])
    sid = s.create_schematic("customization:\n  extraKernelArgs:\n    - test=readiness\n")
    new = s.create_schematic("customization:\n  extraKernelArgs:\n    - test=readiness-new\n")
    image = {path: f"/image/{sid}/{VERSION}/{path}" for path in ASSETS}
    uncached = f"/image/{new}/{VERSION}/cmdline-metal-amd64"
    cache = f"registry:{cache_registry.host}"
    shared = f"registry:{registry.host}"

    # All up: the assets are built (through the first replica) and their bytes kept.
    data = {}
    for path in ASSETS:
        built = builder.get(image[path])
        assert built.status_code == 302, built.text
        data[path] = requests.get(built.headers["Location"], timeout=30).content
    assert b"test=readiness" in data["cmdline-metal-amd64"]
    assert api.verbose() == dict.fromkeys(["lifecycle", "redis", shared, cache, "s3", "talos-versions"], "ok")

    # 1. Redis down: cached assets are served (redirect to S3, or streamed); builds are 503.
    s.redis_server.stop()
    checks = api.verbose()
    assert checks["redis"].startswith("failed: redis is unavailable: ConnectionError")
    assert checks["lifecycle"] == checks[cache] == checks[shared] == checks["s3"] == "ok"
    cached = api.get(image["cmdline-metal-amd64"])
    verified_at = time.monotonic()  # the replica remembers the verified entry for ENTRY_TTL from here
    assert cached.status_code == 302
    assert requests.get(cached.headers["Location"], timeout=30).content == data["cmdline-metal-amd64"]
    streamed = api.get(image["cmdline-metal-amd64"], headers=IPXE)
    assert (streamed.status_code, streamed.content) == (200, data["cmdline-metal-amd64"])
    unavailable(api.get(uncached), "redis is unavailable")
    unavailable(api.get(uncached, headers={"Prefer": "respond-async"}), "redis is unavailable")
    unavailable(api.get(f"/builds/{'0' * 64}"), "redis is unavailable")
    manifest = api.get(f"/v2/installer/{new}/manifests/{VERSION}")
    unavailable(manifest, "redis is unavailable")
    assert manifest.json()["errors"][0]["code"] == "UNAVAILABLE"
    created = api.request("POST", "/schematics", data=b"customization:\n  extraKernelArgs:\n    - x=1\n")
    assert created.status_code == 201  # schematics live in the registry: no Redis needed
    assert api.get("/versions").status_code == 200
    assert api.get("/healthz").status_code == 200

    # 2. The cache registry down too: an entry this replica has not verified cannot be trusted
    #    (S3 objects are only trusted through the signed entry), so it is 503, as new builds are.
    cache_registry.stop()
    checks = api.verbose()
    assert checks[cache] == (
        f"failed: registry {cache_registry.host} is unavailable: ConnectionError (used for cache.oci)"
    )
    assert checks["redis"].startswith("failed:") and checks[shared] == checks["s3"] == "ok"
    unavailable(api.get(image["cmdline-metal-arm64"]), cache_registry.host)
    unavailable(api.get(uncached), cache_registry.host)

    # 3. And S3: nothing of a cached asset is reachable. 503s, never a 500 (nor gunicorn's own
    #    500 for a stream that fails before its first byte).
    s3.stop()
    checks = api.verbose()
    assert all(checks[name].startswith("failed:") for name in ("redis", cache, "s3"))
    assert checks["lifecycle"] == checks[shared] == "ok"
    unavailable(api.get(image["kernel-amd64"]))
    unavailable(api.get(image["cmdline-metal-amd64"], headers=IPXE))
    assert api.get(image["cmdline-metal-amd64"]).status_code in (302, 503)  # 302: remembered (ENTRY_TTL)
    unavailable(api.get(uncached))

    # 4. The cache registry back, S3 still down: served from the registry's copy (not redirected
    #    to the S3 that is down), byte for byte.
    cache_registry.start()
    checks = api.verbose()
    assert checks[cache] == "ok" and checks["s3"].startswith("failed:")
    for path in ("kernel-amd64", "cmdline-metal-arm64"):
        served = api.get(image[path])
        assert (served.status_code, served.content) == (200, data[path])
        assert "Location" not in served.headers
    streamed = api.get(image["cmdline-metal-amd64"], headers=IPXE)
    assert (streamed.status_code, streamed.content) == (200, data["cmdline-metal-amd64"])
    # The asset this replica redirected to S3 before the outage: once its remembered entry expired,
    # its bytes come from the registry too, not a redirect to the S3 that is down.
    time.sleep(max(0.0, verified_at + ENTRY_TTL + 1 - time.monotonic()))
    served = api.get(image["cmdline-metal-amd64"])
    assert (served.status_code, served.content) == (200, data["cmdline-metal-amd64"])
    unavailable(api.get(uncached), "redis is unavailable")

    # 5. Everything back: every check passes and a new build is made.
    s3.start()
    s3.create_bucket(s.bucket or "")
    s.redis_server.start()
    assert set(api.verbose().values()) == {"ok"}
    built = api.get(uncached, headers=IPXE, timeout=300)
    assert built.status_code == 200, built.text
    assert b"test=readiness-new" in built.content

    assert not [answer for answer in api.answers + builder.answers if answer[2] >= 500 and answer[2] != 503]
