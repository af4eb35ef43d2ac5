"""Library errors that mean a shared dependency is down become 503s naming it."""

from __future__ import annotations

import kombu.exceptions
import pytest
import redis

from common.outages import OUTAGE_ERRORS, as_unavailable


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (redis.ConnectionError("refused"), "redis is unavailable: ConnectionError; retry later"),
        (redis.TimeoutError("slow"), "redis is unavailable: TimeoutError; retry later"),
        (redis.BusyLoadingError("loading"), "redis is unavailable: BusyLoadingError; retry later"),
        (redis.ReadOnlyError("replica"), "redis is unavailable: ReadOnlyError; retry later"),
        (
            kombu.exceptions.OperationalError("x"),
            "the build queue is unavailable: OperationalError; retry later",
        ),
    ],
)
def test_outages_are_503s_naming_the_dependency(exc: Exception, message: str) -> None:
    assert isinstance(exc, OUTAGE_ERRORS)
    error = as_unavailable(exc)
    assert (error.status, error.message) == (503, message)
    assert error.__cause__ is exc


def test_other_redis_errors_are_bugs_not_outages() -> None:
    assert not isinstance(redis.ResponseError("WRONGTYPE"), OUTAGE_ERRORS)
    assert not isinstance(redis.DataError("bad value"), OUTAGE_ERRORS)
