"""Benchmark: schematic ID cost and POST /schematics throughput under gunicorn.

Starts its own Redis, registry and API (2 gunicorn workers x 8 threads), then prints:
- the cost of computing one ID (decode + canonical emit + sha256), in microseconds;
- requests/s for GET /healthz (baseline, same server, same client), POST of new schematics
  (each a registry write) and POST of existing ones (answered from memory/Redis),
  each also as a ratio to the baseline.

Run: .venv/bin/python -m bench.schematics [--requests 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from common.schematic import canonicalize
from devstack.services import RedisServer, RegistryServer
from tests.support.factory import api_server, factory_config

SAMPLE = b"""customization:
  extraKernelArgs: [console=ttyS0, net.ifnames=0]
  meta:
    - key: 0xa
      value: '{"externalIPs":["1.2.3.4"]}'
  systemExtensions:
    officialExtensions: [siderolabs/gvisor, siderolabs/iscsi-tools]
"""


def id_cost(iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        canonicalize(SAMPLE)
    return (time.perf_counter() - start) / iterations * 1e6


def throughput(n: int, concurrency: int, call: Callable[[requests.Session, int], int]) -> float:
    sessions = [requests.Session() for _ in range(concurrency)]

    def run(i: int) -> int:
        return call(sessions[i % concurrency], i)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(run, range(n)))
    elapsed = time.perf_counter() - start
    bad = [s for s in statuses if s not in (200, 201)]
    if bad:
        raise SystemExit(f"{len(bad)} failed requests (e.g. {bad[0]})")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency

    print(f"schematic ID cost: {id_cost(2000):.1f} us per ID (decode + emit + sha256)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as redis_server, RegistryServer(root / "registry") as registry:
            config = factory_config(redis_server.url, registry.host, **{"http.workers": 2, "http.threads": 8})
            (root / "api").mkdir()
            with api_server(root / "api", config) as api:
                tag = uuid.uuid4().hex[:8]

                def health(s: requests.Session, i: int) -> int:
                    return s.get(f"{api.url}/healthz", timeout=30).status_code

                def new(s: requests.Session, i: int) -> int:
                    body = f"customization: {{extraKernelArgs: [bench-{tag}-{i}]}}"
                    return s.post(f"{api.url}/schematics", data=body, timeout=30).status_code

                def existing(s: requests.Session, i: int) -> int:
                    return s.post(f"{api.url}/schematics", data=SAMPLE, timeout=30).status_code

                existing(requests.Session(), 0)
                throughput(n // 4, c, health)  # warm-up: connections, worker threads, imports
                base = throughput(n, c, health)
                created = throughput(max(n // 4, 50), c, new)
                dup = throughput(n, c, existing)
    print(f"GET /healthz (baseline):        {base:8.0f} req/s")
    print(f"POST /schematics, new:          {created:8.0f} req/s  ({created / base:.2f} x baseline)")
    print(f"POST /schematics, existing:     {dup:8.0f} req/s  ({dup / base:.2f} x baseline)")


if __name__ == "__main__":
    main()
