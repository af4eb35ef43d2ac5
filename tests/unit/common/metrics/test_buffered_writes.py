"""Buffered writes (``PrometheusMetrics.buffer_writes``, the API's hot path): events reach the
multiprocess files when flushed, by the timer or at exit, exactly as unbuffered writes would have put
them there, and once. Each scenario runs in a fresh interpreter, as test_multiprocess.py says why."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from tests.unit.common.metrics.test_multiprocess import PRELUDE, run

SETUP = """
import sys
with multiprocess_directory() as path:
    from common.metrics import definitions as d
    from common.metrics.exposition import MetricsServer
    from common.metrics.prometheus import process_backend
    m = process_backend()
    server = MetricsServer("127.0.0.1:0", path).start()
    labels = {"method": "GET", "handler": "/x", "status": "200"}
"""


def scenario(body: str) -> Any:
    """Runs ``body`` inside SETUP's multiprocess directory, with its backend ``m`` and listener."""
    return run(PRELUDE, SETUP + textwrap.indent(textwrap.dedent(body), "    "))


def test_events_are_held_until_flushed_then_land_as_unbuffered_writes_would() -> None:
    result = scenario(
        """
            m.inc(d.HTTP_REQUESTS, method="GET", status="200")  # a series' first event: written at once
            m.observe(d.HTTP_DURATION, 0.001, **labels)
            m.observe(d.ASSETS_BUILD_LATENCY, 0.5)
            m.inc(d.HTTP_INFLIGHT, handler="/x")
            m.buffer_writes(3600)  # the timer never fires during this test
            for v in (0.001, 0.005, 0.3, 20.0):
                m.observe(d.HTTP_DURATION, v, **labels)
            m.observe(d.ASSETS_BUILD_LATENCY, 700.0)
            for _ in range(5):
                m.inc(d.HTTP_REQUESTS, method="GET", status="200")
            m.inc(d.HTTP_INFLIGHT, 2, handler="/x")
            held = scrape(server.port)
            m.flush()
            flushed = scrape(server.port)
            m.inc(d.HTTP_INFLIGHT, 5, handler="/x")
            m.set(d.HTTP_INFLIGHT, 7, handler="/x")  # written at once, the pending +5 dropped
            m.inc(d.HTTP_INFLIGHT, 1, handler="/x")
            m.flush()
            after_set = scrape(server.port)
            server.stop()
            print(json.dumps({"held": held, "flushed": flushed, "after_set": after_set}))
        """,
    )
    labels = {"handler": "/x", "method": "GET", "status": "200"}
    http = json.dumps(labels, sort_keys=True)
    held, flushed = result["held"], result["flushed"]
    assert held['http_request_total{"method": "GET", "status": "200"}'] == 1
    assert held[f"http_request_duration_seconds_count{http}"] == 1
    assert held['http_requests_inflight{"handler": "/x"}'] == 1
    assert flushed['http_request_total{"method": "GET", "status": "200"}'] == 6
    assert flushed['http_requests_inflight{"handler": "/x"}'] == 3

    def bucket(le: str) -> float:
        return flushed[
            "http_request_duration_seconds_bucket" + json.dumps({**labels, "le": le}, sort_keys=True)
        ]

    # Prometheus' rule (an upper bound is inclusive), as prometheus_client's own observe counts.
    bounds = ("0.005", "0.01", "0.25", "0.5", "10.0", "+Inf")
    assert [bucket(le) for le in bounds] == [3, 3, 3, 4, 4, 5]
    assert flushed[f"http_request_duration_seconds_count{http}"] == 5
    assert abs(flushed[f"http_request_duration_seconds_sum{http}"] - 20.307) < 1e-9
    assert flushed['image_factory_assets_build_latency_seconds_bucket{"le": "600.0"}'] == 1
    assert flushed['image_factory_assets_build_latency_seconds_bucket{"le": "+Inf"}'] == 2
    assert result["after_set"]['http_requests_inflight{"handler": "/x"}'] == 8


def test_pending_events_are_written_once_across_a_fork_and_at_exit() -> None:
    result = scenario(
        """
            m.inc(d.SCHEMATIC_GET)  # remembered
            m.buffer_writes(3600)
            m.inc(d.SCHEMATIC_GET)  # pending in the parent when it forks
            pid = os.fork()
            if pid == 0:  # as a gunicorn worker: records, then leaves through sys.exit
                for _ in range(3):
                    m.inc(d.SCHEMATIC_GET)
                sys.exit(0)
            os.waitpid(pid, 0)
            child_exited = scrape(server.port)
            m.flush()
            flushed = scrape(server.port)
            server.stop()
            print(json.dumps({"child_exited": child_exited, "flushed": flushed}))
        """,
    )
    assert (
        result["child_exited"]["image_factory_schematic_get_total{}"] == 1 + 3
    )  # the parent's 1 still pending
    assert result["flushed"]["image_factory_schematic_get_total{}"] == 1 + 1 + 3


def test_the_timer_writes_without_being_asked() -> None:
    result = scenario(
        """
            m.inc(d.SCHEMATIC_GET)
            m.buffer_writes(0.2)
            for _ in range(4):
                m.inc(d.SCHEMATIC_GET)
            started = time.monotonic()
            while scrape(server.port)["image_factory_schematic_get_total{}"] != 5:
                assert time.monotonic() - started < 10
                time.sleep(0.05)
            server.stop()
            print(json.dumps(time.monotonic() - started))
        """,
    )
    assert result < 10
