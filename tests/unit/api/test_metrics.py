"""HTTP metrics per route: upstream's route patterns as the ``handler`` label, the duration histogram
and request counters in prometheus-flask-exporter's shape (unprefixed), response sizes and requests in
flight."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, Response
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import http_metrics, route_pattern
from api.middleware import FactoryFlask, install
from common.metrics import NULL_METRICS, Metrics
from common.metrics.prometheus import PrometheusMetrics, generate_latest


@pytest.mark.parametrize(
    ("rule", "pattern"),
    [
        ("/image/<schematic_id>/<version>/<path>", "/image/:schematic/:version/:path"),
        ("/schematics/<schematic_id>", "/schematics/:schematic"),
        ("/v2/<path:path>", "/v2/*path"),
        ("/versions", "/versions"),
    ],
)
def test_route_pattern_is_upstreams(rule: str, pattern: str) -> None:
    assert route_pattern(rule) == pattern


def app_with(backend: Metrics) -> Flask:
    app = FactoryFlask("test")

    @app.get("/image/<schematic_id>/<version>/<path>")
    def image(schematic_id: str, version: str, path: str) -> Response:
        return Response(b"x" * 1234)

    @app.route("/stream", methods=["GET", "HEAD"])
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"y" * 10

        return Response(chunks(), headers={"Content-Length": "10"})

    @app.get("/broken")
    def broken() -> Response:
        raise RuntimeError("a bug")

    install(app, http_metrics(backend))
    return app


def samples(backend: PrometheusMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(generate_latest(backend).decode())
        for s in f.samples
    }


def test_requests_are_measured_per_route() -> None:
    backend = PrometheusMetrics()
    client = app_with(backend).test_client()
    assert client.get("/image/abc/v1.12.4/kernel-amd64").status_code == 200
    assert client.get("/image/def/v1.12.4/initramfs-amd64.xz").status_code == 200
    assert client.get("/stream").status_code == 200
    assert client.head("/stream").status_code == 200
    assert client.get("/nowhere").status_code == 404
    found = samples(backend)

    def one(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    image = {"handler": "/image/:schematic/:version/:path", "method": "GET", "status": "200"}
    assert one("http_request_duration_seconds_count", **image) == 2
    assert one("http_response_size_bytes_count", **image) == 2
    assert one("http_response_size_bytes_sum", **image) == 2 * 1234
    assert one("http_response_size_bytes_sum", handler="/stream", method="GET", status="200") == 10
    assert one("http_response_size_bytes_sum", handler="/stream", method="HEAD", status="200") == 0
    assert one("http_request_duration_seconds_count", handler="unmatched", method="GET", status="404") == 1
    assert one("http_requests_inflight", handler="/image/:schematic/:version/:path") == 0
    assert one("http_request_total", method="GET", status="200") == 3


def test_nothing_is_registered_when_metrics_are_disabled() -> None:
    app = app_with(NULL_METRICS)
    assert app.test_client().get("/image/abc/v1.12.4/kernel-amd64").status_code == 200
    assert isinstance(app, FactoryFlask) and app.http_metrics is None


def test_a_view_that_raises_is_counted_as_the_flask_exporter_counted_it() -> None:
    backend = PrometheusMetrics()
    client = app_with(backend).test_client()
    assert client.get("/broken").status_code == 500
    assert client.get("/broken").status_code == 500
    found = samples(backend)
    broken = frozenset({"handler": "/broken", "method": "GET", "status": "500"}.items())
    assert found[("http_request_duration_seconds_count", broken)] == 2
    assert (
        found[("http_request_exceptions_total", frozenset({"method": "GET", "status": "500"}.items()))] == 2
    )
    assert found[("http_request_total", frozenset({"method": "GET", "status": "500"}.items()))] == 2
    assert found[("http_requests_inflight", frozenset({"handler": "/broken"}.items()))] == 0


def test_durations_fall_in_prometheus_default_buckets() -> None:
    backend = PrometheusMetrics()
    client = app_with(backend).test_client()
    assert client.get("/image/abc/v1.12.4/kernel-amd64").status_code == 200
    bounds = {
        dict(labels)["le"]
        for (name, labels) in samples(backend)
        if name == "http_request_duration_seconds_bucket"
    }
    assert bounds == {
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.075",
        "0.1",
        "0.25",
        "0.5",
        "0.75",
        "1.0",
        "2.5",
        "5.0",
        "7.5",
        "10.0",
        "+Inf",
    }
