"""Benchmark: a stampede of clients for one cold asset — one build, every client served.

The model is ``tests/integration/test_cold_stampede.py`` (200 clients, one API); this is the same at
``--clients`` (1000) through two API processes (each ``http.workers`` x ``http.threads``, at most
``http.maxWaiters`` waiting places per worker process for builds it does not wait for yet), one
Celery worker, the fixture release. The baseline, measured in the same run, is one client alone
asking for another cold asset of the same kind (the build plus its delivery).

Every client opens a connection of its own (``Connection: close``, as that many machines would) and
they start together (a barrier). Printed: the answers by status, how many imager runs the crowd
caused (``if:build:runs:<key>``, target 1), whether every client got the same bytes, the time until
the last answer against the lone client's, and the answer latency percentiles.

Run: .venv/bin/python -m bench.stampede [--clients 1000] [--path cmdline-metal-amd64]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from devstack.release.release import build_release
from devstack.services import RegistryServer
from tests.support.stack import Stack, factory_stack


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def cold_url(stack: Stack, api: int, version: str, path: str, label: str) -> str:
    sid = stack.create_schematic(
        f"customization:\n  extraKernelArgs: [bench-stampede-{label}-{uuid.uuid4().hex[:12]}]\n"
    )
    return f"{stack.apis[api].url}/image/{sid}/{version}/{path}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--path", default="cmdline-metal-amd64", help="the cold asset (cheap by default)")
    parser.add_argument("--http-workers", type=int, default=2)
    parser.add_argument("--http-threads", type=int, default=128)
    parser.add_argument("--max-waiters", type=int, default=20)
    args = parser.parse_args()
    overrides = {
        "http.workers": args.http_workers,
        "http.threads": args.http_threads,
        "http.maxWaiters": args.max_waiters,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-stampede-") as tmp,
        RegistryServer(Path(tmp) / "registry") as registry,
    ):
        root = Path(tmp)
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[args.version])
        with factory_stack(root / "stack", None, registry, release, apis=2, **overrides) as stack:
            # warm: sources pulled by a first build, so the lone client and the crowd build alike
            warm = requests.get(cold_url(stack, 0, args.version, args.path, "warm"), timeout=1800)
            if warm.status_code != 200:
                raise SystemExit(f"warm-up build: {warm.status_code} {warm.text[:300]}")
            started = time.monotonic()
            lone = requests.get(cold_url(stack, 0, args.version, args.path, "lone"), timeout=1800)
            alone = time.monotonic() - started
            if lone.status_code != 200:
                raise SystemExit(f"lone client: {lone.status_code} {lone.text[:300]}")

            sid_url = cold_url(stack, 0, args.version, args.path, "crowd")
            urls = [sid_url.replace(stack.apis[0].url, stack.apis[i % 2].url) for i in range(args.clients)]
            runs_before = stack.total_runs()
            barrier = threading.Barrier(args.clients)

            def fetch(url: str) -> tuple[int, str, float]:
                barrier.wait()
                began = time.monotonic()
                try:
                    r = requests.get(url, headers={"Connection": "close"}, timeout=1800)
                except requests.RequestException as exc:
                    return 0, type(exc).__name__, time.monotonic() - began
                return r.status_code, hashlib.sha256(r.content).hexdigest(), time.monotonic() - began

            print(
                f"{args.clients} clients for one cold {args.path} through 2 APIs x {args.http_workers} "
                f"workers x {args.http_threads} threads (maxWaiters {args.max_waiters}), 1 Celery worker"
            )
            began = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(fetch, urls))
            crowd = time.monotonic() - began
            builds = stack.total_runs() - runs_before
            statuses = Counter(status for status, _, _ in results)
            bodies = {digest for status, digest, _ in results if status == 200}
            latencies = [t for _, _, t in results]
            print(f"  answers: {', '.join(f'{n} x {s}' for s, n in sorted(statuses.items()))}")
            print(f"  builds caused: {builds} (target 1); distinct bodies among the 200s: {len(bodies)}")
            print(
                f"  lone client: {alone:.2f} s; the crowd's last answer after {crowd:.2f} s "
                f"({crowd / alone:.1f}x); answer latency p50 {percentile(latencies, 0.5):.2f} s, "
                f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies):.2f} s"
            )
            served = statuses.get(200, 0)
            print(f"  every client served: {'yes' if served == args.clients else f'no ({served})'}")


if __name__ == "__main__":
    main()
