"""Benchmark: cold installer pulls through the ``/v2`` frontend, against the clients' patience.

Upstream builds an installer inside the manifest request, amd64 then arm64, and nodes pulling from
factory.talos.dev gave up on cold images ("context deadline exceeded", siderolabs/image-factory#456).
This prints, for fresh schematics (each a cold pull), measured in the same run on the same stack:

* ``sequential``: the two per-architecture installer builds one after the other (upstream's order;
  the time its manifest request needs before it can even push), the baseline;
* ``cold``: request → answer of ``GET /v2/metal-installer/<id>/manifests/<v>`` here (both builds in
  parallel on two workers, then publication from the cache);
* ``prebuilt``: the same request when ``build.prebuildInstallers`` queued the builds when the
  schematic was created (a second stack), measured once they finished: publication only;
* ``after ISO``: the same request after the schematic's ISOs were downloaded (a user boots the ISO,
  then installs): the installer builds reuse the ISOs' initramfs (``worker/imager/pieces.py``);
* ``warm``: a second pull of the same tag.

Clients' limits, read in their sources: Talos HEAD aborts a pull connection that reads no byte for
90 s (``siderolabs/talos:internal/pkg/containers/image/resolver.go``, ``PullConnIdleTimeout``) and
retries for up to 20 min (``image.go``, ``PullTimeout``); Talos before 1.3 gave a whole pull 1 min
(``retry.Exponential(1*time.Minute)``); containerd's CRI cancels a pull without progress after
5 min (``image_pull_progress_timeout``); go-containerregistry, skopeo and podman set no response
timeout. The factory answers 503 + Retry-After after ``build.registryWaitTimeout`` (75 s).

Run: .venv/bin/python -m bench.registry [--version v1.12.4] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from devstack.release.release import build_release
from devstack.services import RedisServer, RegistryServer
from tests.support.stack import Stack, factory_stack

ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"
EXTENSION = "  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"
TIMEOUT = 1800
TALOS_IDLE_LIMIT = 90.0


def fresh_schematic(stack: Stack, label: str) -> str:
    arg = f"bench-registry-{label}-{uuid.uuid4().hex[:12]}"
    return stack.create_schematic(f"customization:\n  extraKernelArgs:\n    - {arg}\n{EXTENSION}")


def timed(call: Callable[[], requests.Response]) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(
            f"{response.request.method} {response.url}: {response.status_code} {response.text[:300]}"
        )
    return elapsed


def manifest(stack: Stack, sid: str, version: str) -> Callable[[], requests.Response]:
    url = f"{stack.api.url}/v2/metal-installer/{sid}/manifests/{version}"
    return lambda: requests.get(url, headers={"Accept": ACCEPT}, timeout=TIMEOUT)


def image(
    stack: Stack, sid: str, version: str, arch: str, path: str = "installer-{arch}.tar"
) -> Callable[[], requests.Response]:
    url = f"{stack.api.url}/image/{sid}/{version}/{path.format(arch=arch)}"
    return lambda: requests.get(url, timeout=TIMEOUT)


def wait_for_prebuilds(stack: Stack, sid: str, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done = 0
        for name in stack.redis.scan_iter("if:build:rec:*"):
            record = stack.record(name.decode().rsplit(":", 1)[1])
            if sid in record.get("request", "") and record.get("status") == "succeeded":
                done += 1
        if done >= count:
            return
        time.sleep(0.5)
    raise SystemExit(f"the prebuilds of {sid} did not finish")


def summary(name: str, values: list[float], baseline: float) -> str:
    median = statistics.median(values)
    worst = max(values)
    verdict = "within" if worst < TALOS_IDLE_LIMIT else "BEYOND"
    return (
        f"{name:<11} median {median:7.2f} s  max {worst:7.2f} s  {median / baseline:5.2f}x sequential  "
        f"({verdict} Talos' 90 s idle limit)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    version = args.version
    with (
        tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis_server,
        RegistryServer(Path(tmp) / "registry") as registry,
    ):
        root = Path(tmp)
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[version])
        sequential: list[float] = []
        cold: list[float] = []
        warm: list[float] = []
        after_iso: list[float] = []
        prebuilt: list[float] = []
        with factory_stack(root / "plain", redis_server, registry, release, apis=1, workers=2) as stack:
            timed(image(stack, fresh_schematic(stack, "warmup"), version, "amd64"))  # sources pulled once
            for run in range(args.runs):
                sid = fresh_schematic(stack, f"seq{run}")
                sequential.append(
                    timed(image(stack, sid, version, "amd64")) + timed(image(stack, sid, version, "arm64"))
                )
                sid = fresh_schematic(stack, f"cold{run}")
                cold.append(timed(manifest(stack, sid, version)))
                warm.append(timed(manifest(stack, sid, version)))
                sid = fresh_schematic(stack, f"iso{run}")
                for arch in ("amd64", "arm64"):
                    timed(image(stack, sid, version, arch, "metal-{arch}.iso"))
                after_iso.append(timed(manifest(stack, sid, version)))
        overrides = {"build.prebuildInstallers": [version]}
        with factory_stack(
            root / "prebuild", redis_server, registry, release, apis=1, workers=2, **overrides
        ) as stack:
            timed(image(stack, fresh_schematic(stack, "warmup"), version, "amd64"))
            for run in range(args.runs):
                sid = fresh_schematic(stack, f"pre{run}")
                wait_for_prebuilds(stack, sid, 2)
                prebuilt.append(timed(manifest(stack, sid, version)))
        base = statistics.median(sequential)
        print(
            f"Talos {version} fixture installers, amd64 + arm64, {args.runs} fresh schematics each, 2 workers"
        )
        print(
            f"sequential  median {base:7.2f} s  (baseline: amd64 then arm64, the builds upstream waits for)"
        )
        print(summary("cold", cold, base))
        print(summary("after ISO", after_iso, base))
        print(summary("prebuilt", prebuilt, base))
        print(summary("warm", warm, base))


if __name__ == "__main__":
    main()
