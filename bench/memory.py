"""Benchmark: API memory while many clients stream one large asset.

The API streams a cached asset from the registry (or S3) in chunks of ``common.cache.base.CHUNK``
and never holds more than a chunk or two per download, so its workers' resident memory must not
grow with the asset's size. This starts Redis, the registry and the fixture release, one factory API
(gunicorn, ``--http-workers`` processes, by default the configuration's 2) and no Celery worker,
publishes a ``--size-mib`` asset (1 GiB of zeros by default: the registry stores and serves every
byte) under the key of a real request through the cache's own ``put`` (uploaded, signed, published,
as a worker would), then:

1. one client (curl) downloads it, then ``--clients`` clients (20) download it at once;
2. the RSS of every API process (the gunicorn master and its workers, ``/proc/<pid>/status``) is
   sampled every 0.2 s; printed: before, peak and growth for each run (target: growth < 50 MB with
   20 clients), and the clients' bytes and throughput (every client must get every byte).

Run: .venv/bin/python -m bench.memory [--size-mib 1024] [--clients 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from common.builds.plan import content_type, plan_request
from common.cache.base import AssetInfo
from common.config import Config, load_config
from common.profile.secureboot import secureboot_assets
from common.services import build_services
from devstack.release.release import build_release
from devstack.services import RegistryServer, ensure_system_packages
from tests.support.stack import factory_stack

TOOLS = {"curl": "curl"}
ASSET = "metal-amd64.raw.zst"


def session_rss(sid: int) -> dict[int, int]:
    """Resident bytes of every process in session ``sid`` (devstack starts each service in its own)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != sid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry.name)] = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return found


class Sampler(threading.Thread):
    """The peak RSS of each process of a session while it runs."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.peak: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pid, rss in session_rss(self.sid).items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.done.wait(0.2)

    def stop(self) -> dict[int, int]:
        self.done.set()
        self.join()
        return self.peak


def download(
    url: str, clients: int, sid: int
) -> tuple[dict[int, int], dict[int, int], list[tuple[int, int]], float]:
    """RSS before, peak RSS, (status, bytes) of each client, and the wall time."""
    before = session_rss(sid)
    sampler = Sampler(sid)
    sampler.start()
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-A",
                "iPXE/1.21.1",
                "-w",
                "%{http_code} %{size_download}",
                url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=3600)
        status, size = out.split()
        results.append((int(status), int(size)))
    wall = time.monotonic() - started
    return before, sampler.stop(), results, wall


def report(
    label: str,
    size: int,
    before: dict[int, int],
    peak: dict[int, int],
    results: list[tuple[int, int]],
    wall: float,
) -> int:
    mib = 1 << 20
    growth = {pid: peak.get(pid, 0) - rss for pid, rss in before.items()}
    complete = sum(1 for status, got in results if status == 200 and got == size)
    print(
        f"  {label}: {complete}/{len(results)} complete, "
        f"{len(results) * size / mib / wall:.0f} MiB/s in all, "
        f"{wall:.1f} s; API RSS before {sum(before.values()) / mib:.0f} MiB, "
        f"growth {sum(growth.values()) / mib:.1f} MiB in all, per process "
        + ", ".join(f"{pid}: {g / mib:+.1f}" for pid, g in sorted(growth.items()))
    )
    return sum(growth.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--http-workers", type=int, default=Config().http.workers)
    args = parser.parse_args()
    ensure_system_packages(TOOLS)
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp,
        RegistryServer(Path(tmp) / "registry") as registry,
    ):
        root = Path(tmp)
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[args.version])
        overrides = {"http.workers": args.http_workers}
        with factory_stack(root / "stack", None, registry, release, workers=0, **overrides) as stack:
            sid = stack.create_schematic("customization:\n  extraKernelArgs: [bench-memory]\n")
            config = load_config([str(stack.api.config_path)])
            svc = build_services(config)
            _, plan = plan_request(
                svc.schematics, svc.artifacts, sid, args.version, ASSET,
                secureboot=secureboot_assets(config.secureBoot),
            )  # fmt: skip
            blob = root / "asset"
            size = args.size_mib << 20
            with open(blob, "wb") as fh:
                fh.truncate(size)
            started = time.monotonic()
            svc.cache.put(plan.key, blob, AssetInfo(filename=ASSET, content_type=content_type(ASSET)))
            os.unlink(blob)
            print(
                f"published {args.size_mib} MiB as {ASSET} ({plan.key[:12]}…) "
                f"in {time.monotonic() - started:.0f} s"
            )
            url = f"{stack.api.url}/image/{sid}/{args.version}/{ASSET}"
            head = requests.head(url, headers={"User-Agent": "iPXE/1.21.1"}, timeout=60)
            if head.status_code != 200 or int(head.headers["Content-Length"]) != size:
                raise SystemExit(f"HEAD {url}: {head.status_code} {dict(head.headers)}")
            pid = stack.api.pid or 0
            print(
                f"API: {config.http.workers} gunicorn workers x {config.http.threads} threads, "
                "assets streamed (iPXE)"
            )
            one = report("1 client ", size, *download(url, 1, pid))
            many = report(f"{args.clients} clients", size, *download(url, args.clients, pid))
            print(
                f"  growth with {args.clients} clients: {many / (1 << 20):.1f} MiB (target < 50), "
                f"{many / max(one, 1 << 20):.1f}x that of one client (or of 1 MiB, if it grew less)"
            )


if __name__ == "__main__":
    main()
