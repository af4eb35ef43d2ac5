"""Benchmark: asset delivery — cached redirects, cached requests beside build waiters, cold builds.

Starts its own Redis, registry, S3 (SeaweedFS), the fixture Talos release, two factory API processes
(gunicorn, ``http.workers`` x ``http.threads`` each) and one Celery worker, then prints:

1. Redirect throughput and latency (``wrk -t2 -c64 -d10s --latency``; ``--connections``) for a cached
   asset with S3 enabled (302 to a presigned URL), against two baselines measured in the same run: a
   bare Flask app whose one route returns ``redirect(url, 302)``, served by the same gunicorn settings
   (the same ``FactoryServer.load_config`` from the same configuration, only ``load()`` differs), and nginx
   (``return 302``, one worker) as the machine's ceiling. It also prints the CPU each process group
   spent per request (API, registry, S3, Redis, wrk) to show where the time goes, and GET /healthz on
   the factory (framework and middleware without the asset lookup). wrk shares the CPUs with the
   servers, the registry and the S3 server. Last, one request at a time through ``create_app`` in
   this process, split into resolve, cache lookup and presign.
2. Cached requests while clients wait on builds: ``--waiters`` requests for uncached assets whose builds
   cannot start (the cluster-wide build slots, Redis sorted set ``if:build:slots``, are filled with
   fake members that never expire), against the same measurement without waiters; then the slots are
   freed and the time until every waiter got its answer is printed. All waiters go to the first API
   (the one measured).
3. Cold builds, request to first byte of the asset (following the redirect to S3), with the build
   record's split: queued (task pickup, lock, resolve, slot), build (imager, signing, S3 upload,
   publish) and after (notification, cache lookup, answer, S3 first byte); sources are warm (the
   first build of the run pulled them). Then coalescing: ``--coalesce`` concurrent requests for one
   uncached asset through both API processes, and how many imager runs they caused
   (``if:build:runs:<key>``): the target is one.

Run: .venv/bin/python -m bench.delivery [--version v1.12.4] [--duration 10] [--waiters 200]
     [--coalesce 50] [--runs 3] [--http-workers N] [--http-threads N] [--connections 64]
     [--parts 1,2,3] [--metrics]  (``--metrics``: the APIs record and serve metrics, as in production)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, redirect
from werkzeug.wrappers import Response

from api.app import create_app
from api.server import FactoryServer, brand_gunicorn
from common.builds.plan import plan_request
from common.builds.state import QUEUE, SLOTS
from common.config import Config, load_config
from common.profile.secureboot import secureboot_assets
from common.services import Services
from devstack.factory import write_config
from devstack.nginx import NginxServer
from devstack.release.release import build_release
from devstack.services import (
    LOOPBACK,
    RedisServer,
    RegistryServer,
    S3Server,
    Service,
    ensure_system_packages,
)
from tests.support.stack import Stack, factory_stack

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"wrk": "wrk", "nginx": "nginx-light"}
WRK_THREADS = 2
WRK_CONNECTIONS = 64  # --connections
CACHED_ASSET = "kernel-amd64"
#: assets whose profile hash depends on the schematic's kernel arguments (a kernel's does not)
COLD_ASSETS = ("cmdline-metal-amd64", "metal-amd64-uki.efi", "metal-amd64.iso")
WAITER_ASSET = "cmdline-metal-amd64"
LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------------
# baselines: the bare Flask app (same gunicorn settings) and nginx


def bare_app(location: str) -> Flask:
    app = Flask("bare")

    @app.route("/")
    def found() -> Response:
        return redirect(location, 302)

    return app


class BareServer(FactoryServer):
    """The factory's gunicorn application with its settings (``load_config``), serving ``bare_app``."""

    def __init__(self, config: Config, log_level: str, location: str) -> None:
        self.location = location
        super().__init__(config, log_level)

    def load(self) -> Any:
        return bare_app(self.location)


def serve_bare(config_path: str, location: str, log_level: str) -> None:
    """Entry point of the baseline process: the same steps as ``image-factory api`` (api.server.serve)."""
    config = load_config([config_path])
    brand_gunicorn()
    BareServer(config, log_level, location).run()


def _redirects(url: str) -> bool:
    try:
        return requests.get(url, allow_redirects=False, timeout=1).status_code == 302
    except requests.RequestException:
        return False


class BareFlask(Service):
    """``python -m bench.delivery --serve-bare``, with the factory's configuration on its own port."""

    name = "bare-flask"
    start_timeout = 60.0
    stop_timeout = 15.0

    def __init__(self, state_dir: Path, config: dict[str, Any], location: str, log_level: str) -> None:
        super().__init__(state_dir)
        self.config = config
        self.location = location
        self.log_level = log_level
        self.config_path = self.state_dir / "config.yaml"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def prepare(self) -> None:
        http = {**self.config.get("http", {}), "httpListenAddr": f"{LOOPBACK}:{self.port}"}
        write_config(self.config_path, {**self.config, "http": http})

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=f"{REPO}:{path}" if path else str(REPO))

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bench.delivery", "--serve-bare", str(self.config_path),
            "--location", self.location, "--log-level", self.log_level,
        ]  # fmt: skip

    def is_ready(self) -> bool:
        return _redirects(self.url)


class Nginx(NginxServer):
    """nginx answering every request with ``302 <location>``: a master and one worker, no access log."""

    name = "nginx"
    binaries = TOOLS
    with_worker = True

    def __init__(self, state_dir: Path, location: str) -> None:
        super().__init__(state_dir)
        self.location = location

    @property
    def url(self) -> str:
        return f"http://{self.host}/"

    def http_block(self) -> str:
        return f"""  access_log off;
  server {{
    listen {self.host};
    location / {{ return 302 "{self.location}"; }}
  }}"""

    def is_ready(self) -> bool:
        return _redirects(self.url)


# --------------------------------------------------------------------------------------------------
# measuring


@dataclass(frozen=True)
class Load:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int  # answers other than 2xx/3xx, plus socket errors and timeouts
    cpu: dict[str, float]  # process group → CPU seconds spent during the run


def _wrk_latency(out: str, percent: int) -> float:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if match is None:
        raise SystemExit(f"cannot read the {percent}% latency from wrk's output:\n{out}")
    return float(match.group(1)) * LATENCY_UNITS[match.group(2)]


def session_cpu(sessions: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) of every live process in each session, by name.

    devstack starts each service in its own session, so a session is the service and every process it
    forked (gunicorn workers, Celery pool processes). CPU of processes that already exited is lost.
    """
    by_sid = {sid: name for name, sid in sessions.items()}
    totals = dict.fromkeys(sessions, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        name = by_sid.get(int(fields[3]))  # field 6: session id
        if name is not None:
            totals[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # fields 14, 15
    return totals


def wrk(url: str, seconds: int, sessions: dict[str, int] | None = None) -> Load:
    sessions = sessions or {}
    before = session_cpu(sessions)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = session_cpu(sessions)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: after[name] - before[name] for name in sessions}
    cpu["wrk"] = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    errors = 0
    if bad := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(bad.group(1))
    if sock := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in sock.groups())
    return Load(
        float(rps.group(1)), _wrk_latency(out, 50), _wrk_latency(out, 99), int(total.group(1)), errors, cpu
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def sequential(url: str, n: int, expect: int = 302) -> tuple[float, float]:
    """p50 and p99 (ms) of ``n`` requests one after another on one keep-alive connection."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or LOOPBACK, parts.port, timeout=60)
    samples = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            samples.append((time.perf_counter() - start) * 1e3)
            if response.status != expect:
                raise SystemExit(f"GET {url}: {response.status}, expected {expect}")
    finally:
        conn.close()
    return percentile(samples, 0.5), percentile(samples, 0.99)


def unique_schematic(stack: Stack, label: str) -> str:
    return stack.create_schematic(
        f"customization:\n  extraKernelArgs: [bench-delivery-{label}-{uuid.uuid4().hex[:12]}]\n"
    )


def run_keys(stack: Stack) -> set[str]:
    return {k.decode().rsplit(":", 1)[-1] for k in stack.redis.scan_iter("if:build:runs:*")}


# --------------------------------------------------------------------------------------------------
# 1. cached redirects


def _cpu_line(load: Load, names: list[str]) -> str:
    per = {name: load.cpu.get(name, 0.0) / max(1, load.requests) * 1e6 for name in names}
    return "      CPU per request (us): " + ", ".join(f"{name} {per[name]:.0f}" for name in names)


def _row(label: str, load: Load) -> str:
    errors = f"  {load.errors} errors" if load.errors else ""
    return f"  {label:<38} {load.rps:9.0f} {load.p50:9.2f} {load.p99:9.2f}{errors}"


def redirects(
    stack: Stack, services: dict[str, Service], root: Path, cached_url: str, location: str, seconds: int
) -> Load:
    api = stack.api
    sessions = {name: s.pid for name, s in services.items() if s.pid is not None}
    api_sessions = {"api": api.pid or 0, **sessions}
    print(
        f"\n1. cached-asset redirects: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s --latency "
        f"({os.cpu_count()} CPUs shared by wrk, the servers, registry, S3 and Redis)"
    )
    print(f"  {'':<38} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    wrk(cached_url, 2)  # warm-up: threads, connections, caches
    factory = wrk(cached_url, seconds, api_sessions)
    print(_row(f"factory: GET /image/…/{CACHED_ASSET} → S3", factory))
    print(_cpu_line(factory, ["api", "registry", "s3", "redis", "wrk"]))
    health = wrk(f"{api.url}/healthz", seconds, api_sessions)
    print(_row("factory: GET /healthz (no lookup)", health))
    print(_cpu_line(health, ["api", "wrk"]))

    (root / "bare").mkdir()
    with BareFlask(root / "bare", stack.config, location, "info") as bare:
        wrk(bare.url, 2)
        flask = wrk(bare.url, seconds, {"bare": bare.pid or 0})
    print(_row("bare Flask redirect, same gunicorn", flask))
    print(_cpu_line(flask, ["bare", "wrk"]))
    (root / "nginx").mkdir()
    with Nginx(root / "nginx", location) as nginx:
        wrk(nginx.url, 2)
        ceiling = wrk(nginx.url, seconds, {"nginx": nginx.pid or 0})
    print(_row("nginx return 302, 1 worker", ceiling))
    print(_cpu_line(ceiling, ["nginx", "wrk"]))
    print(
        f"  factory / bare Flask: {factory.rps / flask.rps:.2f} x req/s (target >= 0.80), "
        f"p50 {factory.p50 / flask.p50:.1f} x, p99 {factory.p99 / flask.p99:.1f} x"
    )
    print(f"  factory / nginx:      {factory.rps / ceiling.rps:.2f} x req/s")
    print(f"  bare Flask / nginx:   {flask.rps / ceiling.rps:.2f} x req/s")
    return factory


def timed(call: Callable[[], object], n: int) -> tuple[float, float]:
    """Mean wall and CPU milliseconds of one call over ``n`` calls, after a warm-up."""
    for _ in range(10):
        call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def in_process(stack: Stack, sid: str, version: str, n: int = 200) -> None:
    """One cached request at a time through ``create_app`` in this process, split into its parts."""
    os.environ.update(stack.env)  # the S3 credentials, as the API processes get them
    app = create_app(load_config([str(stack.api.config_path)]))
    svc: Services = app.extensions["factory"]
    client = app.test_client()
    path = f"/image/{sid}/{version}/{CACHED_ASSET}"
    sb = secureboot_assets(svc.config.secureBoot)
    if (status := client.get(path).status_code) != 302:
        raise SystemExit(f"in-process GET {path}: {status}")
    _, plan = plan_request(svc.schematics, svc.artifacts, sid, version, CACHED_ASSET, secureboot=sb)
    asset = svc.cache.get(plan.key)
    if asset is None:
        raise SystemExit(f"in-process: {CACHED_ASSET} is not cached")
    parts = {
        "whole request": timed(lambda: client.get(path), n),
        "GET /healthz": timed(lambda: client.get("/healthz"), n),
        "plan": timed(
            lambda: plan_request(svc.schematics, svc.artifacts, sid, version, CACHED_ASSET, secureboot=sb), n
        ),
        "cache lookup": timed(lambda: svc.cache.get(plan.key), n),
        "presign": timed(lambda: asset.redirect_url(CACHED_ASSET), n),
    }
    print(f"  one request at a time in this process (Flask test client), wall / CPU ms over {n}:")
    print("    " + "; ".join(f"{name} {wall:.2f} / {cpu:.2f}" for name, (wall, cpu) in parts.items()))


# --------------------------------------------------------------------------------------------------
# 2. cached requests beside clients waiting on builds


def open_waiters(base: str, paths: list[str]) -> list[socket.socket]:
    parts = urlsplit(base)
    host, port = parts.hostname or LOOPBACK, parts.port or 80
    socks = []
    for path in paths:
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        sock.setblocking(False)
        socks.append(sock)
    return socks


def collect(socks: list[socket.socket], timeout: float) -> dict[socket.socket, tuple[int, float]]:
    """Status and arrival time (monotonic) of the answers that arrive within ``timeout``."""
    answers: dict[socket.socket, tuple[int, float]] = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while len(answers) < len(socks):
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                sock = ready
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
                answers[sock] = (status, time.monotonic())
                selector.unregister(sock)
            if time.monotonic() >= deadline:
                break
    return answers


@contextlib.contextmanager
def blocked_slots(stack: Stack, count: int) -> Iterator[None]:
    """Fills the cluster-wide build slots with members that never expire; removes them at the end."""
    members = {f"bench-delivery-blocker-{i}": time.time() + 1e9 for i in range(count)}
    stack.redis.zadd(SLOTS, members)
    try:
        yield
    finally:
        stack.redis.zrem(SLOTS, *members)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def waiters(stack: Stack, cached_url: str, version: str, n: int, assets: int, seconds: int) -> None:
    config = load_config([str(stack.api.config_path)])
    print(
        f"\n2. cached requests while {n} clients of the same API wait on {assets} uncached builds "
        f"that cannot start (build slots filled; API {config.http.workers} x {config.http.threads} threads, "
        f"maxWaiters {config.http.maxWaiters or config.http.threads - 8} per process)"
    )
    sequential(cached_url, 50)
    quiet_seq = sequential(cached_url, 200)
    quiet = wrk(cached_url, seconds)
    ids = [unique_schematic(stack, f"waiter{i}") for i in range(assets)]
    paths = [f"/image/{ids[i % assets]}/{version}/{WAITER_ASSET}" for i in range(n)]
    socks: list[socket.socket] = []
    try:
        with blocked_slots(stack, config.build.maxConcurrency):
            start = time.monotonic()
            socks = open_waiters(stack.api.url, paths)
            wait_for(lambda: int(stack.redis.zcard(QUEUE)) >= assets, 60, "the waiters' builds to be queued")
            time.sleep(2.0)  # every request resolved, looked up and waiting
            early = collect(socks, 0.0)
            busy_seq = sequential(cached_url, 200)
            busy = wrk(cached_url, seconds)
            early.update(collect([s for s in socks if s not in early], 0.0))
            waiting = [s for s in socks if s not in early]
            released = time.monotonic()
        answers = collect(waiting, 300.0)
        done = time.monotonic()
    finally:
        for sock in socks:
            sock.close()
    print(f"  {'':<38} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"  {'200 sequential, no waiters':<38} {'':>9} {quiet_seq[0]:9.2f} {quiet_seq[1]:9.2f}")
    print(f"  {f'200 sequential, {len(waiting)} waiting':<38} {'':>9} {busy_seq[0]:9.2f} {busy_seq[1]:9.2f}")
    print(_row(f"wrk {seconds}s, no waiters", quiet))
    print(_row(f"wrk {seconds}s, {len(waiting)} waiting", busy))
    print(
        f"  with / without waiters: sequential p50 {busy_seq[0] / quiet_seq[0]:.2f} x, "
        f"p99 {busy_seq[1] / quiet_seq[1]:.2f} x; wrk {busy.rps / quiet.rps:.2f} x req/s, "
        f"p50 {busy.p50 / quiet.p50:.2f} x, p99 {busy.p99 / quiet.p99:.2f} x"
    )
    if early:
        statuses = Counter(status for status, _ in early.values())
        print(
            f"  {len(early)} of {n} waiters were answered before the slots were freed: "
            + ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))
        )
    statuses = Counter(status for status, _ in answers.values())
    missing = len(waiting) - len(answers)
    print(
        f"  slots freed after {released - start:.0f} s: {len(answers)} of {len(waiting)} waiters answered "
        f"({', '.join(f'{count} x {status}' for status, count in sorted(statuses.items()))}) "
        f"within {done - released:.1f} s" + (f"; {missing} never answered" if missing else "")
    )


# --------------------------------------------------------------------------------------------------
# 3. cold builds and coalescing


@dataclass(frozen=True)
class Cold:
    first_byte: float  # request → first byte of the asset (after the redirect), seconds
    answer: float  # request → the API's answer (302)
    queued: float  # enqueuedAt → startedAt (task pickup, lock, cache check, resolve, slot)
    build: float  # startedAt → finishedAt (imager, signing, S3 upload, publish)
    after: float  # finishedAt → first byte (notification, lookup, answer, S3)


def cold_build(stack: Stack, version: str, path: str, label: str) -> Cold:
    sid = unique_schematic(stack, label)
    before = run_keys(stack)
    wall = time.time()
    start = time.perf_counter()
    with requests.get(
        f"{stack.api.url}/image/{sid}/{version}/{path}", allow_redirects=False, stream=True, timeout=1800
    ) as answer:
        answered = time.perf_counter() - start
        if answer.status_code != 302:
            raise SystemExit(f"cold {path}: {answer.status_code} {answer.text[:300]}")
        location = answer.headers["Location"]
    with requests.get(location, stream=True, timeout=60) as body:
        body.raise_for_status()
        next(body.iter_content(65536))
        first = time.perf_counter() - start
    new = run_keys(stack) - before
    if len(new) != 1:
        raise SystemExit(f"cold {path}: expected one new build, found {sorted(new)}")
    record = stack.record(new.pop())
    enqueued, started, finished = (float(record[k]) for k in ("enqueuedAt", "startedAt", "finishedAt"))
    return Cold(first, answered, started - enqueued, finished - started, wall + first - finished)


def cold_builds(stack: Stack, version: str, runs: int) -> None:
    print(f"\n3. cold builds on {version} (uncached asset, warm sources), median of {runs}")
    header = ("first byte", "302 after", "queued", "build", "after", "1st byte/build")
    print(f"  {'asset':<22}" + "".join(f" {h:>14}" for h in header))
    for path in COLD_ASSETS:
        results = [cold_build(stack, version, path, f"cold{n}") for n in range(runs)]
        med = statistics.median
        first = med(r.first_byte for r in results)
        build = med(r.build for r in results)
        answer, queued, after = (med(getattr(r, f) for r in results) for f in ("answer", "queued", "after"))
        cells = (first, answer, queued, build, after)
        print(
            f"  {path:<22}"
            + "".join(f" {c:13.3f}s" for c in cells)
            + f" {first / build if build else 0:13.2f}x"
        )


def coalescing(stack: Stack, version: str, path: str, n: int) -> None:
    sid = unique_schematic(stack, "coalesce")
    urls = [f"{stack.apis[i % len(stack.apis)].url}/image/{sid}/{version}/{path}" for i in range(n)]
    before = stack.total_runs()
    barrier = threading.Barrier(n)

    def one(url: str) -> tuple[int, float]:
        with requests.Session() as session:
            barrier.wait()
            start = time.perf_counter()
            response = session.get(url, allow_redirects=False, timeout=1800)
            return response.status_code, time.perf_counter() - start

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, urls))
    builds = stack.total_runs() - before
    statuses = Counter(status for status, _ in results)
    times = [t for _, t in results]
    print(
        f"  coalescing: {n} concurrent requests for one uncached {path} through {len(stack.apis)} API "
        f"processes: {', '.join(f'{c} x {s}' for s, c in sorted(statuses.items()))}, answered after "
        f"{min(times):.2f}-{max(times):.2f} s, {builds} build(s) -> "
        f"{n / builds if builds else float('inf'):.0f} requests per build (target {n})"
    )


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run in part 1")
    parser.add_argument("--waiters", type=int, default=200)
    parser.add_argument("--waiter-assets", type=int, default=10, help="distinct uncached assets they wait on")
    parser.add_argument("--coalesce", type=int, default=50)
    parser.add_argument("--coalesce-path", default="metal-amd64.iso")
    parser.add_argument("--runs", type=int, default=3, help="cold builds per asset")
    parser.add_argument("--http-workers", type=int, default=Config().http.workers)
    parser.add_argument("--http-threads", type=int, default=Config().http.threads)
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, part 1")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1 for redirects only")
    parser.add_argument("--metrics", action="store_true", help="the APIs serve /metrics (recording on)")
    parser.add_argument("--serve-bare", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.location, args.log_level)
        return

    ensure_system_packages(TOOLS)
    global WRK_CONNECTIONS  # one run, one setting
    WRK_CONNECTIONS = args.connections
    parts = set(args.parts.split(","))
    with (
        tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis_server,
        RegistryServer(Path(tmp) / "registry") as registry,
        S3Server(Path(tmp) / "s3") as s3,
    ):
        root = Path(tmp)
        started = time.perf_counter()
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[args.version])
        print(f"fixture release {args.version} pushed in {time.perf_counter() - started:.0f} s")
        overrides = {"http.workers": args.http_workers, "http.threads": args.http_threads}
        with factory_stack(
            root / "stack", redis_server, registry, release, apis=2, s3=s3, metrics=args.metrics, **overrides
        ) as stack:
            sid = unique_schematic(stack, "cached")
            cached_url = f"{stack.api.url}/image/{sid}/{args.version}/{CACHED_ASSET}"
            started = time.perf_counter()
            first = requests.get(cached_url, allow_redirects=False, timeout=1800)
            if first.status_code != 302:
                raise SystemExit(f"GET {cached_url}: {first.status_code} {first.text[:300]}")
            print(
                f"stack: 2 APIs x {args.http_workers} gunicorn workers x {args.http_threads} threads, "
                f"1 worker; "
                f"first build ({CACHED_ASSET}, sources pulled) {time.perf_counter() - started:.1f} s"
            )
            location = first.headers["Location"]
            redis_used = stack.redis_server or redis_server  # the stack runs a redis-server of its own
            services: dict[str, Service] = {"registry": registry, "s3": s3, "redis": redis_used}
            if "1" in parts:
                redirects(stack, services, root, cached_url, location, args.duration)
                in_process(stack, sid, args.version)
            if "2" in parts:
                waiters(stack, cached_url, args.version, args.waiters, args.waiter_assets, 5)
            if "3" in parts:
                cold_builds(stack, args.version, args.runs)
                coalescing(stack, args.version, args.coalesce_path, args.coalesce)


if __name__ == "__main__":
    main()
