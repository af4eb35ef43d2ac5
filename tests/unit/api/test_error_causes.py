"""Every 5xx the API answers is logged with its cause: the exception and traceback (or, for a build's
failure, the cause and traceback the worker left in the build record), the request id and the build key.
Clients of a 500 still get upstream's bare ``internal server error``; other statuses keep their text."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask

from api.errors import register_error_handlers
from api.middleware import FactoryFlask, install
from api.registry.errors import factory_error_response
from common.builds.state import BuildRecord, Status
from common.delivery.service import BuildFailedError
from common.errors import FactoryError
from common.logging import build_key_var

KEY = "ab" * 32
TRACE = 'Traceback (most recent call last):\n  File "worker/imager/iso.py", line 1\nToolError: GRUB …\n'


def _record(status: int, error: str, cause: str) -> BuildRecord:
    return BuildRecord(
        key=KEY, status=Status.FAILED, error=error, error_status=status, cause=cause, traceback=TRACE
    )


@pytest.fixture
def app() -> Iterator[Flask]:
    app = FactoryFlask(__name__)
    install(app, None)
    register_error_handlers(app)

    @app.get("/build-failed")
    def build_failed() -> str:
        build_key_var.set(KEY)  # what Delivery.locate does once the request names its build
        cause = "ToolError: GRUB i386-pc modules missing from the imager image"
        raise BuildFailedError(_record(500, "internal server error", cause))

    @app.get("/bad-source")
    def bad_source() -> str:
        text = "image r/siderolabs/x@sha256:1: layer sha256:2 does not match its digest (…)"
        raise BuildFailedError(_record(502, text, "BadSourceError: " + text))

    @app.get("/boom")
    def boom() -> str:
        build_key_var.set(KEY)
        raise RuntimeError("the API's own bug")

    @app.get("/plain-500")
    def plain() -> str:
        raise FactoryError("a server-side problem the client need not read")

    @app.get("/registry-500")
    def registry() -> object:
        return factory_error_response(
            BuildFailedError(_record(500, "internal server error", "OSError: disk"))
        )

    @app.get("/fine")
    def fine() -> str:
        logging.getLogger("test").error("a line of a request that named no build")
        return "ok"

    yield app


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "api.errors"]


def test_a_build_failure_logs_the_worker_s_cause_with_request_id_and_key(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/build-failed", headers={"X-Request-ID": "req-1"})
    assert (response.status_code, response.text) == (500, "internal server error\n")
    (line,) = _failures(caplog)
    assert line.levelno == logging.ERROR
    assert line.request_id == "req-1" and line.key == KEY  # type: ignore[attr-defined]
    assert line.cause == "ToolError: GRUB i386-pc modules missing from the imager image"  # type: ignore[attr-defined]
    assert line.worker_traceback == TRACE  # type: ignore[attr-defined]
    assert "GRUB i386-pc modules missing" in line.getMessage() and KEY in line.getMessage()


def test_a_bad_source_reaches_the_client_as_502_with_its_text(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/bad-source", headers={"X-Request-ID": "req-2"})
    assert response.status_code == 502
    assert response.text == "image r/siderolabs/x@sha256:1: layer sha256:2 does not match its digest (…)\n"
    (line,) = _failures(caplog)
    assert line.key == KEY and line.request_id == "req-2"  # type: ignore[attr-defined]


def test_an_unexpected_exception_logs_its_traceback_request_id_and_key(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    with caplog.at_level(logging.INFO):
        response = client.get("/boom", headers={"X-Request-ID": "req-3"})
        plain = client.get("/plain-500", headers={"X-Request-ID": "req-4"})
    assert (response.status_code, response.text) == (500, "internal server error\n")
    assert (plain.status_code, plain.text) == (500, "internal server error\n")
    boom, factory = _failures(caplog)
    assert boom.exc_info is not None and isinstance(boom.exc_info[1], RuntimeError)
    assert boom.cause == "RuntimeError: the API's own bug"  # type: ignore[attr-defined]
    assert boom.request_id == "req-3" and boom.key == KEY  # type: ignore[attr-defined]
    assert factory.exc_info is not None and factory.request_id == "req-4"  # type: ignore[attr-defined]
    assert factory.cause == "FactoryError: a server-side problem the client need not read"  # type: ignore[attr-defined]
    assert not hasattr(factory, "key")  # the key of the previous request did not leak into this one


def test_the_registry_frontend_logs_its_5xx_too(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/registry-500", headers={"X-Request-ID": "req-5"})
    assert response.status_code == 500 and response.json == {
        "errors": [{"code": "UNKNOWN", "message": "internal server error", "detail": None}]
    }
    (line,) = _failures(caplog)
    assert line.cause == "OSError: disk" and line.key == KEY  # type: ignore[attr-defined]


def test_the_build_key_is_reset_between_requests(app: Flask) -> None:
    client = app.test_client()
    # whatever an earlier test left in this thread's context (Delivery.locate called outside a
    # request sets it too) must be what the request's teardown restores
    before = build_key_var.get()
    assert before != KEY
    client.get("/boom")
    assert build_key_var.get() == before
    assert client.get("/fine").status_code == 200
