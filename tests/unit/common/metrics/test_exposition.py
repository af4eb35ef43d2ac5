"""The /metrics listener: Go-style addresses, scrape-time snapshots (the API's cluster gauges), and a
taken port refused at start-up. Values of the multiprocess directory are in test_multiprocess.py."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import definitions as d
from common.metrics.exposition import MetricsServer, split_address


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":2122", ("0.0.0.0", 2122)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:2122", ("::1", 2122)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_split_address(addr: str, expected: tuple[str, int]) -> None:
    assert split_address(addr) == expected


@pytest.mark.parametrize("addr", ["2122", "localhost", "host:port", ""])
def test_split_address_refuses_garbage(addr: str) -> None:
    with pytest.raises(ValueError, match=r"metrics\.addr"):
        split_address(addr)


def scrape(server: MetricsServer) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10).read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_snapshots_are_read_at_every_scrape(tmp_path: Path) -> None:
    state = {"queued": 0.0, "fail": False}

    def snapshot() -> dict[d.Metric, float]:
        if state["fail"]:
            raise ConnectionError("redis is down")
        return {d.BUILD_QUEUE_LENGTH: state["queued"], d.WORKERS_LIVE: 2.0}

    server = MetricsServer("127.0.0.1:0", tmp_path, [snapshot]).start()
    try:
        first = scrape(server)
        assert first["image_factory_build_queue_length"] == 0
        assert first["image_factory_workers_live"] == 2
        assert first["image_factory_cluster_state_up"] == 1
        state["queued"] = 5
        assert scrape(server)["image_factory_build_queue_length"] == 5
        state["fail"] = True
        down = scrape(server)  # the scrape still answers; the cluster gauges are missing, up is 0
        assert down["image_factory_cluster_state_up"] == 0
        assert "image_factory_build_queue_length" not in down
    finally:
        server.stop()


def test_a_taken_port_fails_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            MetricsServer(f"127.0.0.1:{port}", tmp_path).start()
