"""One call in flight per key: concurrent callers for the same key share its result.

When a build finishes, every request of the process waiting for it wakes at once; without this
each would read the build record from Redis (and then look the asset up in the cache) at the same
moment, hundreds of connections for one answer.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """``do(key, fn)`` calls ``fn`` unless a call for ``key`` is in flight, whose result (or error)
    it then shares. Nothing is remembered once the call returned: the next caller calls again.

    ``started_after`` (a ``time.monotonic()`` value): only share a call that started then or later,
    so that the result reflects everything that happened before that moment (a waiter woken by a
    notification must not get a read that began before the notification)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}

    def do(self, key: K, fn: Callable[[], V], *, started_after: float | None = None) -> V:
        while True:
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    break
                if started_after is None or flight.started >= started_after:
                    break
            flight.done.wait()  # too old to share: let it land, then call (or share) anew
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise _copy(flight.error)
            return flight.value  # type: ignore[return-value]
        try:
            flight.value = fn()
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


def _copy(error: BaseException) -> BaseException:
    """A copy of ``error`` to raise in another thread (one object raised in many threads would grow
    one traceback from all of them); the original when it cannot be copied."""
    try:
        return copy.copy(error)
    except Exception:
        return error
