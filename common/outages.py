"""Which library exceptions mean "a shared dependency is down", as the 503 they should answer.

Registry and S3 clients raise :class:`~common.errors.UnavailableError` themselves. Redis (build
state, waiters, locks, shared caches) and the Celery broker are called from many places and raise
their libraries' own errors, so the API translates those once, at its edge (``api/errors.py`` and the
registry blueprint): a request that needs Redis while it is down answers 503 with ``Retry-After``,
not 500. Other Redis errors (a bad command, a script error) are bugs and stay 500.
"""

from __future__ import annotations

import kombu.exceptions
import redis

from common.errors import UnavailableError

#: Redis not answering (refused, timed out, still loading its data set) or failing over (a replica
#: that became read-only), and the broker connection failing after kombu's retries.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    kombu.exceptions.OperationalError,
)


def as_unavailable(exc: Exception) -> UnavailableError:
    """The 503 for an exception in :data:`OUTAGE_ERRORS` (the message names the dependency)."""
    what = "the build queue" if isinstance(exc, kombu.exceptions.OperationalError) else "redis"
    error = UnavailableError(f"{what} is unavailable: {exc.__class__.__name__}; retry later")
    error.__cause__ = exc
    return error
