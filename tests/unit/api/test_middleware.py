"""The request middleware: request id (echoed, in the request's context variables, gone after it), the
``Server`` header, the access line, and the exception counter with the API's own error handlers."""

from __future__ import annotations

import logging
import uuid

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from api.errors import register_error_handlers
from api.metrics import http_metrics
from api.middleware import ACCESS_LOGGER, FactoryFlask, install
from common.logging import build_key_var, request_id_var
from common.metrics.prometheus import PrometheusMetrics, generate_latest
from common.version import SERVER_HEADER


def make_app(backend: PrometheusMetrics | None = None) -> Flask:
    app = FactoryFlask(__name__)
    register_error_handlers(app)

    @app.get("/seen/<name>")
    def seen(name: str) -> dict[str, str]:
        build_key_var.set("k" * 8)
        return {"request_id": request_id_var.get(), "build_key": build_key_var.get()}

    @app.get("/bug")
    def bug() -> str:
        raise ZeroDivisionError("a bug")

    install(app, http_metrics(backend) if backend is not None else None)
    return app


def test_the_request_id_is_echoed_seen_by_the_view_and_forgotten() -> None:
    client = make_app().test_client()
    response = client.get("/seen/x", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.json == {"request_id": "abc-123", "build_key": "k" * 8}
    assert (request_id_var.get(), build_key_var.get()) == ("", "")  # nothing leaks to the next request


def test_a_hostile_request_id_is_replaced_by_a_uuid() -> None:
    response = make_app().test_client().get("/seen/x", headers={"X-Request-ID": "a b;c<>"})
    uuid.UUID(response.headers["X-Request-ID"])


def test_server_header_is_added_unless_the_server_sends_it() -> None:
    client = make_app().test_client()
    assert client.get("/seen/x").headers.getlist("Server") == [SERVER_HEADER]
    response = client.get("/seen/x", environ_overrides={"SERVER_SOFTWARE": SERVER_HEADER})
    assert "Server" not in response.headers  # gunicorn writes it (api.server.brand_gunicorn)


def test_one_access_line_per_request_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    client = make_app().test_client()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.get("/seen/%C3%A9t%C3%A9", headers={"X-Request-ID": "r1"})
        client.get("/nowhere", headers={"X-Request-ID": "r2"})
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(r.method, r.path, r.status, r.request_id, r.levelno) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/seen/été", 200, "r1", logging.INFO),
        ("GET", "/nowhere", 404, "r2", logging.WARNING),
    ]
    assert all(0 <= r.duration < 5 for r in lines)  # type: ignore[attr-defined]


def test_an_unexpected_exception_is_counted_once_though_the_api_answers_it() -> None:
    backend = PrometheusMetrics()
    client = make_app(backend).test_client()
    assert client.get("/bug").text == "internal server error\n"
    assert client.get("/seen/x").status_code == 200
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(backend).decode())
        for s in family.samples
    }
    assert (
        found[("http_request_exceptions_total", frozenset({"method": "GET", "status": "500"}.items()))] == 1
    )
    assert (
        "http_request_exceptions_total",
        frozenset({"method": "GET", "status": "200"}.items()),
    ) not in found
    assert found[("http_requests_inflight", frozenset({"handler": "/bug"}.items()))] == 0
    assert found[("http_requests_inflight", frozenset({"handler": "/seen/:name"}.items()))] == 0
