"""Benchmark: repeats through a caching proxy (Debian nginx ``proxy_cache``) in front of the factory.

What ``api.rendering.asset_response`` sends for caches (``ETag``, ``Last-Modified``,
``Cache-Control``, 304 on conditional requests, a redirect's ``max-age`` bounded by its presigned
URL) is only worth something if a real cache reuses it. This starts the fixture release, one factory
API with S3 and one Celery worker, and one nginx (``tests/support/caching_proxy.py``: one process,
its own prefix under a temporary directory, a free loopback port) with:

* ``/static/asset``: a file of the asset's size served by nginx itself — the machine's ceiling;
* ``/``: ``proxy_pass`` to the factory with ``proxy_cache`` (``proxy_cache_revalidate on``, so an
  expired entry is revalidated with ``If-None-Match``/``If-Modified-Since``).

Then, each with ``wrk -t2 -c<connections> -d<duration>s --latency`` in the same run:

1. the static file through nginx (baseline);
2. the asset's bytes (``User-Agent: iPXE/…``, which the factory streams) through the proxy: after the
   first request every repeat is a cache hit; how many reached the factory is counted from nginx's
   ``$upstream_cache_status`` log;
3. the asset's redirect (any other client: 302 to a presigned S3 URL) through the proxy, under another
   cache key (``?filename=``): the stored bytes have no ``Vary: User-Agent``, they suit every client;
4. the factory directly: the streamed bytes, a conditional GET answered 304, and the redirect.

Run: .venv/bin/python -m bench.proxy_cache [--version v1.12.4] [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from devstack.release.release import build_release
from devstack.services import RegistryServer, S3Server, ensure_system_packages
from tests.support.caching_proxy import CachingProxy
from tests.support.stack import Stack, factory_stack

TOOLS = {"wrk": "wrk", "nginx": "nginx"}
ASSET = "cmdline-metal-amd64"  # small: the cost of a request, not of copying bytes
IPXE = "iPXE/1.21.1"  # streamed, never redirected (cache.redirectPXE is off)
LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass(frozen=True)
class Load:
    rps: float
    mbps: float
    p50: float
    p99: float
    errors: int


def _latency(out: str, percent: int) -> float:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if match is None:
        raise SystemExit(f"cannot read the {percent}% latency from wrk's output:\n{out}")
    return float(match.group(1)) * LATENCY_UNITS[match.group(2)]


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str] | None = None) -> Load:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    transfer = re.search(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out, re.M)
    if rps is None or transfer is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    scale = {"B": 1e-6, "KB": 1e-3 * 1.024, "MB": 1.048576, "GB": 1073.741824}[transfer.group(2)]
    errors = 0
    if bad := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(bad.group(1))
    if sock := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in sock.groups())
    return Load(
        float(rps.group(1)), float(transfer.group(1)) * scale, _latency(out, 50), _latency(out, 99), errors
    )


def row(label: str, load: Load, baseline: Load | None = None) -> str:
    ratio = f" {load.rps / baseline.rps:8.2f}x" if baseline else f" {'':>9}"
    errors = f"  {load.errors} errors" if load.errors else ""
    return f"  {label:<46} {load.rps:9.0f} {load.mbps:8.1f} {load.p50:8.2f} {load.p99:8.2f}{ratio}{errors}"


def check_headers(stack: Stack, url: str) -> tuple[str, str]:
    """What the factory sends (and a cache needs), checked before measuring; returns (ETag, Last-Modified)."""
    streamed = requests.get(url, headers={"User-Agent": IPXE}, timeout=60)
    if streamed.status_code != 200 or "ETag" not in streamed.headers:
        raise SystemExit(f"GET {url} (iPXE): {streamed.status_code} {dict(streamed.headers)}")
    etag, modified = streamed.headers["ETag"], streamed.headers.get("Last-Modified", "")
    again = requests.get(url, headers={"User-Agent": IPXE, "If-None-Match": etag}, timeout=60)
    redirect = requests.get(url, allow_redirects=False, timeout=60)
    print(
        f'  factory: 200 Cache-Control {streamed.headers.get("Cache-Control")!r}, ETag {etag[:14]}…", '
        f"Last-Modified {modified!r}; If-None-Match → {again.status_code}; "
        f"302 Cache-Control {redirect.headers.get('Cache-Control')!r}, Vary {redirect.headers.get('Vary')!r}"
    )
    if again.status_code != 304 or redirect.status_code != 302:
        raise SystemExit("the factory does not answer conditional requests or redirects as expected")
    return etag, modified


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    ensure_system_packages(TOOLS)
    seconds, conns = args.duration, args.connections
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxy-cache-") as tmp,
        RegistryServer(Path(tmp) / "registry") as registry,
        S3Server(Path(tmp) / "s3") as s3,
    ):
        root = Path(tmp)
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[args.version])
        with factory_stack(root / "stack", None, registry, release, s3=s3) as stack:
            sid = stack.create_schematic("customization:\n  extraKernelArgs: [bench-proxy-cache]\n")
            path = f"/image/{sid}/{args.version}/{ASSET}"
            first = requests.get(f"{stack.api.url}{path}", allow_redirects=False, timeout=1800)
            if first.status_code != 302:
                raise SystemExit(f"GET {path}: {first.status_code} {first.text[:300]}")
            size = int(requests.head(f"{stack.api.url}{path}", timeout=60).headers["Content-Length"])
            print(f"asset {ASSET}: {size} bytes, cached (S3 + registry)")
            etag, _ = check_headers(stack, f"{stack.api.url}{path}")
            origin = stack.api.url.removeprefix("http://").rstrip("/")
            (root / "proxy").mkdir()
            with CachingProxy(root / "proxy", origin, size) as proxy:
                for warm in (f"{proxy.url}{path}", f"{stack.api.url}{path}"):
                    requests.get(warm, headers={"User-Agent": IPXE}, timeout=60)  # fills the cache
                hit = requests.get(f"{proxy.url}{path}", headers={"User-Agent": IPXE}, timeout=60)
                print(f"  proxy: a repeat is {hit.headers.get('X-Cache-Status')} ({hit.status_code})")
                print(
                    f"\nwrk -t2 -c{conns} -d{seconds}s --latency, in one run "
                    "(2 CPUs shared by wrk, nginx, the factory, registry, S3 and Redis)"
                )
                print(f"  {'':<46} {'req/s':>9} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ static':>9}")
                wrk(f"{proxy.url}/static/asset", 2, conns)
                static = wrk(f"{proxy.url}/static/asset", seconds, conns)
                print(row("nginx: static file of the same size", static))
                before = proxy.statuses()
                streamed = wrk(f"{proxy.url}{path}", seconds, conns, {"User-Agent": IPXE})
                after = proxy.statuses()
                print(row("proxy_cache: the asset's bytes (repeats)", streamed, static))
                counted = after - before
                print(
                    "      cache status of those requests: "
                    + ", ".join(f"{n} {status}" for status, n in counted.most_common())
                )
                # another cache key: the stored 200 above has no Vary: User-Agent (bytes suit everyone)
                redirects = wrk(f"{proxy.url}{path}?filename={ASSET}", seconds, conns)
                print(row("proxy_cache: the asset's redirect (repeats)", redirects, static))
                direct = wrk(f"{stack.api.url}{path}", seconds, conns, {"User-Agent": IPXE})
                print(row("factory directly: the asset's bytes", direct, static))
                conditional = wrk(
                    f"{stack.api.url}{path}", seconds, conns, {"User-Agent": IPXE, "If-None-Match": etag}
                )
                print(row("factory directly: If-None-Match → 304", conditional, static))
                redirect = wrk(f"{stack.api.url}{path}?filename={ASSET}", seconds, conns)
                print(row("factory directly: the redirect", redirect, static))
                print(
                    f"  through the proxy / directly: bytes {streamed.rps / direct.rps:.1f}x, "
                    f"redirects {redirects.rps / redirect.rps:.1f}x req/s; "
                    f"factory 304 / factory 200: {conditional.rps / direct.rps:.2f}x req/s"
                )


if __name__ == "__main__":
    main()
