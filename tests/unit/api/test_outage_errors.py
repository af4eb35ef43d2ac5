"""``api.errors`` and the registry frontend: a Redis or broker outage is a 503 with Retry-After, in
plain text and in the registry's JSON; other Redis errors are bugs and stay 500."""

from __future__ import annotations

import kombu.exceptions
import pytest
import redis
from flask import Flask

from api.errors import register_error_handlers
from api.routes import registry


def app_raising(exc: Exception) -> Flask:
    app = Flask("t")
    register_error_handlers(app)

    @app.get("/boom")
    def boom() -> str:
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (redis.ConnectionError("Error 111"), "redis is unavailable: ConnectionError; retry later\n"),
        (redis.TimeoutError("Timeout"), "redis is unavailable: TimeoutError; retry later\n"),
        (
            kombu.exceptions.OperationalError("x"),
            "the build queue is unavailable: OperationalError; retry later\n",
        ),
    ],
)
def test_outage_is_503_with_retry_after(exc: Exception, text: str) -> None:
    response = app_raising(exc).test_client().get("/boom")
    assert (response.status_code, response.text) == (503, text)
    assert response.headers["Retry-After"] == "5"


def test_a_redis_bug_stays_500() -> None:
    response = app_raising(redis.ResponseError("WRONGTYPE")).test_client().get("/boom")
    assert (response.status_code, response.text) == (500, "internal server error\n")


def test_registry_frontend_answers_outages_in_its_json() -> None:
    app = Flask("t")
    with app.test_request_context("/v2/installer/x/manifests/v1.12.4"):
        response = registry._outage(redis.ConnectionError("Error 111"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {
        "errors": [
            {
                "code": "UNAVAILABLE",
                "message": "redis is unavailable: ConnectionError; retry later",
                "detail": None,
            }
        ]
    }
