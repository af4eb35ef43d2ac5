"""``/healthz`` and ``/readyz``: only the process's own state makes it unready."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.errors import register_error_handlers
from api.routes import health
from common import readiness
from common.errors import UnavailableError


@pytest.fixture
def lifecycle(monkeypatch: pytest.MonkeyPatch) -> readiness.Lifecycle:
    life = readiness.Lifecycle()
    monkeypatch.setattr(readiness, "lifecycle", life)
    monkeypatch.setattr(health, "lifecycle", life)
    return life


class Checks(dict[str, readiness.Check]):
    """Dependency checks that count their calls."""

    def __init__(self, down: dict[str, str]) -> None:
        super().__init__()
        self.calls = 0
        for name in ("redis", "registry:r.example", "s3"):
            self[name] = self._check(down.get(name))

    def _check(self, reason: str | None) -> readiness.Check:
        def check() -> None:
            self.calls += 1
            if reason is not None:
                raise UnavailableError(reason)

        return check


def make_client(checks: Checks) -> FlaskClient:
    app = Flask("t")
    app.extensions["factory"] = SimpleNamespace(readiness=checks)
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    return app.test_client()


def test_registering_the_app_marks_the_process_serving(lifecycle: readiness.Lifecycle) -> None:
    assert lifecycle.phase is readiness.Phase.STARTING
    make_client(Checks({}))
    assert lifecycle.ready


def test_healthz_is_liveness_only(lifecycle: readiness.Lifecycle) -> None:
    client = make_client(Checks({"redis": "redis is unavailable"}))
    lifecycle.shutting_down()
    for method in ("GET", "HEAD"):
        response = client.open("/healthz", method=method)
        assert (response.status_code, response.data) == (200, b"")


def test_readyz_is_upstreams_and_contacts_no_dependency(lifecycle: readiness.Lifecycle) -> None:
    checks = Checks({"redis": "redis is unavailable: ConnectionError", "s3": "S3 is unavailable"})
    client = make_client(checks)
    for method in ("GET", "HEAD"):
        response = client.open("/readyz", method=method)
        assert (response.status_code, response.data) == (200, b"")
    assert checks.calls == 0  # a hanging dependency cannot time the probe out
    lifecycle.shutting_down()
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (503, "not ready\n")
    assert checks.calls == 0


def test_readyz_verbose_lists_every_check_and_stays_200_through_outages(
    lifecycle: readiness.Lifecycle,
) -> None:
    client = make_client(Checks({"redis": "redis is unavailable: ConnectionError: refused"}))
    response = client.get("/readyz?verbose")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.text == (
        "[+]lifecycle ok\n"
        "[-]redis failed: redis is unavailable: ConnectionError: refused\n"
        "[+]registry:r.example ok\n"
        "[+]s3 ok\n"
        "readyz check passed\n"
    )
    assert client.get("/readyz?verbose=true").text == response.text


def test_readyz_verbose_while_shutting_down(lifecycle: readiness.Lifecycle) -> None:
    client = make_client(Checks({}))
    lifecycle.shutting_down()
    response = client.get("/readyz?verbose")
    assert response.status_code == 503
    assert response.text.splitlines() == [
        "[-]lifecycle failed: shutting down",
        "[+]redis ok",
        "[+]registry:r.example ok",
        "[+]s3 ok",
        "readyz check failed",
    ]
