"""Benchmark: a mixed-traffic soak with one fault injected per minute, errors reported by kind.

Starts the fixture release, S3, a factory stack (one API of ``http.workers`` gunicorn processes, its
own Redis, one Celery worker) and ``--clients`` client threads that, for ``--duration`` seconds,
each send one request after another, picked at random (weights in :data:`MIX`):

* ``cached``: GET a cached asset (302 to S3; 200 from the registry while S3 is down);
* ``schematic``: POST a new schematic (201);
* ``cold``: GET an asset of a new schematic: a build (200 or 302 once built);
* ``bad``: a request that must get a 4xx (unknown schematic, unknown version, broken YAML).

Every minute (first at 20 s) one fault, in turn: Redis stopped, the registry stopped, S3 stopped
(each restarted after ``--fault-length`` seconds), or the Celery worker killed with SIGKILL (a new
one started after the same time). Each answer is classed: ``ok`` (what the kind expects), ``503``
(with ``Retry-After``: the degraded answer a dependency outage should give), and errors: ``5xx``
(anything else from 500 up, a 503 without ``Retry-After`` included), ``unexpected <status>``,
``connection``, ``timeout``. Printed: a table by kind and class, the same inside and outside fault
windows, per fault the answers during it and the time from the restart to the next ``ok`` of each
kind, and at the end one request of each kind after everything is back (``recovered``).

Target: no errors outside the ``503`` class, and recovery after every fault.

Run: .venv/bin/python -m bench.soak [--duration 600] [--clients 6] [--fault-length 15]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.release.release import build_release
from devstack.services import RegistryServer, S3Server, Service
from tests.support.stack import Stack, factory_stack

ASSET = "kernel-amd64"
COLD = "cmdline-metal-amd64"  # cheap to build
MIX = {"cached": 50, "schematic": 15, "cold": 10, "bad": 25}
FAULTS = ("redis", "registry", "s3", "worker")
FIRST_FAULT = 20.0
FAULT_EVERY = 60.0


@dataclass
class Fault:
    name: str
    began: float
    restarted: float = 0.0
    recovered: dict[str, float] = field(default_factory=dict)  # kind → first ok of one sent after the restart


@dataclass
class Answer:
    kind: str
    outcome: str
    at: float  # answered (time.monotonic())
    sent: float


class Soak:
    def __init__(self, stack: Stack, version: str, cached_url: str) -> None:
        self.stack = stack
        self.version = version
        self.cached_url = cached_url
        self.answers: list[Answer] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    # --- traffic ----------------------------------------------------------------------------------

    def request(self, session: requests.Session, kind: str) -> requests.Response:
        api = self.stack.api.url
        if kind == "cached":
            return session.get(self.cached_url, allow_redirects=False, timeout=60)
        if kind == "schematic":
            body = f"customization:\n  extraKernelArgs: [soak-{uuid.uuid4().hex}]\n"
            return session.post(f"{api}/schematics", data=body.encode(), timeout=60)
        if kind == "cold":
            body = f"customization:\n  extraKernelArgs: [soak-cold-{uuid.uuid4().hex}]\n"
            made = session.post(f"{api}/schematics", data=body.encode(), timeout=60)
            if made.status_code != 201:
                return made
            sid = made.json()["id"]
            return session.get(f"{api}/image/{sid}/{self.version}/{COLD}", allow_redirects=False, timeout=120)
        bad = random.choice(
            (
                lambda: session.get(f"{api}/image/{'0' * 64}/{self.version}/{ASSET}", timeout=60),
                lambda: session.get(f"{api}/image/{'a' * 64}/v0.0.0-nope/{ASSET}", timeout=60),
                lambda: session.post(f"{api}/schematics", data=b"customization: [unclosed", timeout=60),
            )
        )
        return bad()

    @staticmethod
    def classify(kind: str, response: requests.Response) -> str:
        status = response.status_code
        expected = {
            "cached": (200, 302),
            "schematic": (201,),
            "cold": (200, 302),
        }.get(kind)
        if expected is None:  # bad
            if 400 <= status < 500 and status != 408:
                return "ok"
        elif status in expected:
            return "ok"
        if status == 503 and response.headers.get("Retry-After"):
            return "503"
        if status >= 500:
            return "5xx"
        return f"unexpected {status}"

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        kinds, weights = list(MIX), list(MIX.values())
        with requests.Session() as session:
            while not self.stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                sent = time.monotonic()
                try:
                    outcome = self.classify(kind, self.request(session, kind))
                except requests.Timeout:
                    outcome = "timeout"
                except requests.ConnectionError:
                    outcome = "connection"
                now = time.monotonic()
                with self.lock:
                    self.answers.append(Answer(kind, outcome, now, sent))
                    if outcome == "ok":
                        for fault in self.faults:
                            # a request sent before the restart measures how long the client was
                            # held, not how soon the factory recovered
                            if fault.restarted and sent > fault.restarted:
                                fault.recovered.setdefault(kind, now - fault.restarted)

    # --- faults -----------------------------------------------------------------------------------

    def inject(self, name: str, length: float, services: dict[str, Service]) -> None:
        fault = Fault(name, time.monotonic())
        with self.lock:
            self.faults.append(fault)
        print(f"  t={fault.began - self.began:5.0f} s  fault: {name}", flush=True)
        if name == "worker":
            self.stack.kill_worker(self.stack.workers[-1])
            self.stop.wait(length)
            self.stack.add_worker()
        else:
            services[name].stop()
            self.stop.wait(length)
            services[name].start()
        fault.restarted = time.monotonic()

    def run(self, duration: float, clients: int, length: float, services: dict[str, Service]) -> None:
        self.began = time.monotonic()
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        end = self.began + duration
        turn = 0
        next_fault = self.began + FIRST_FAULT
        while time.monotonic() < end:
            if time.monotonic() >= next_fault and next_fault + length < end:
                self.inject(FAULTS[turn % len(FAULTS)], length, services)
                turn += 1
                next_fault += FAULT_EVERY
            time.sleep(0.2)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=180)

    # --- report -----------------------------------------------------------------------------------

    def in_fault(self, at: float, grace: float) -> Fault | None:
        for fault in self.faults:
            if fault.began <= at <= (fault.restarted or at) + grace:
                return fault
        return None

    def report(self, grace: float) -> None:
        outcomes = sorted({a.outcome for a in self.answers}, key=lambda o: (o != "ok", o != "503", o))
        table: dict[str, Counter[str]] = defaultdict(Counter)
        windows: dict[str, Counter[str]] = defaultdict(Counter)
        for a in self.answers:
            table[a.kind][a.outcome] += 1
            windows["in fault windows" if self.in_fault(a.at, grace) else "outside faults"][a.outcome] += 1
        print(f"\n  {'':<18}" + "".join(f" {o:>14}" for o in outcomes))
        for name, counts in [*sorted(table.items()), *sorted(windows.items())]:
            print(f"  {name:<18}" + "".join(f" {counts[o]:14d}" for o in outcomes))
        print(f"  (a fault window: from the stop to {grace:.0f} s after the restart)")
        for fault in self.faults:
            during = Counter(a.outcome for a in self.answers if self.in_fault(a.at, grace) is fault)
            recovery = ", ".join(f"{kind} {s:.1f} s" for kind, s in sorted(fault.recovered.items()))
            print(
                f"  {fault.name:<9} at {fault.began - self.began:5.0f} s: "
                + ", ".join(f"{n} {o}" for o, n in during.most_common())
                + f"; first ok after the restart: {recovery or 'none'}"
            )
            if fault.restarted:
                print("            " + self.held(fault))

    def held(self, fault: Fault) -> str:
        """Requests in flight when the dependency came back, and how long they were held: a slow first
        ok can be a client still waiting on a request sent during the fault, not a slow recovery."""
        across = [a for a in self.answers if a.sent < fault.restarted < a.at]
        if not across:
            return "no request in flight at the restart"
        kinds = Counter(a.kind for a in across)
        longest = max(across, key=lambda a: a.at - a.sent)
        return (
            f"in flight at the restart: {', '.join(f'{n} {k}' for k, n in kinds.most_common())}; "
            f"the longest ({longest.kind}, {longest.outcome}) sent {fault.restarted - longest.sent:.1f} s "
            f"before it and answered {longest.at - fault.restarted:.1f} s after"
        )

    def recovered(self) -> dict[str, str]:
        """One request of each kind, now that every service is back."""
        found: dict[str, str] = {}
        with requests.Session() as session:
            for kind in MIX:
                try:
                    found[kind] = self.classify(kind, self.request(session, kind))
                except requests.RequestException as exc:
                    found[kind] = type(exc).__name__
        return found


def wait_ok(call: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call():
                return True
        except requests.RequestException:
            pass
        time.sleep(1)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 10 min)")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--fault-length", type=float, default=15.0, help="seconds each fault lasts")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds after a restart still counted")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
        RegistryServer(Path(tmp) / "registry") as registry,
        S3Server(Path(tmp) / "s3") as s3,
    ):
        root = Path(tmp)
        release = build_release(registry.host, root / "release", namespace="fixture", versions=[args.version])
        overrides = {"build.waitTimeout": "60s"}
        with factory_stack(root / "stack", None, registry, release, s3=s3, **overrides) as stack:
            sid = stack.create_schematic("customization:\n  extraKernelArgs: [bench-soak]\n")
            cached_url = f"{stack.api.url}/image/{sid}/{args.version}/{ASSET}"
            first = requests.get(cached_url, allow_redirects=False, timeout=1800)
            if first.status_code != 302:
                raise SystemExit(f"GET {cached_url}: {first.status_code} {first.text[:300]}")
            assert stack.redis_server is not None
            services: dict[str, Service] = {"redis": stack.redis_server, "registry": registry, "s3": s3}
            soak = Soak(stack, args.version, cached_url)
            print(
                f"soak: {args.duration:.0f} s, {args.clients} clients, mix {MIX}, one fault a minute "
                f"({', '.join(FAULTS)} in turn, {args.fault_length:.0f} s each)",
                flush=True,
            )
            soak.run(args.duration, args.clients, args.fault_length, services)
            soak.report(args.grace)
            ready = wait_ok(lambda: requests.get(f"{stack.api.url}/readyz", timeout=5).ok, 60)
            final = soak.recovered()
            print(
                f"  after the soak: /readyz {'200' if ready else 'not ready'}; one request of each kind: "
                + ", ".join(f"{kind} {outcome}" for kind, outcome in final.items())
                + f" → recovered: {'yes' if ready and set(final.values()) == {'ok'} else 'no'}"
            )
            total = len(soak.answers)
            errors = sum(1 for a in soak.answers if a.outcome not in ("ok", "503"))
            print(f"  {total} requests, {total / args.duration:.1f}/s; errors (not ok, not 503): {errors}")


if __name__ == "__main__":
    main()
