"""When a process was asked to stop (SIGTERM), and how long it has left: the grace period.

An API process (a gunicorn worker) starts its clock when it gets SIGTERM; requests waiting for a
build then wait at most :data:`WAIT_SHARE` of the grace period and are answered 503 with
``Retry-After`` (the build goes on; the client's retry lands on another replica), so a build that
finishes meanwhile still has the rest of the period to be downloaded. A Celery worker's clock is
``shared``: its main process starts it and the pool processes, forked before, read it, to hand their
running builds back before the period ends (``worker.shutdown``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time

#: Share of the grace period a request already waiting for a build keeps waiting.
WAIT_SHARE = 0.5


class ShutdownClock:
    """``begin(grace)`` once, on SIGTERM; then :attr:`stopping` and the time left.

    Times are ``time.monotonic()`` (the same clock in every process of the host). ``begin`` only
    assigns two numbers, so it is safe in a signal handler.
    """

    def __init__(self, *, shared: bool = False) -> None:
        # [started, grace]; started 0.0 while running. Shared memory is inherited by forked processes.
        self._values: ctypes.Array[ctypes.c_double] | list[float] = (
            multiprocessing.RawArray(ctypes.c_double, 2) if shared else [0.0, 0.0]
        )

    def begin(self, grace: float) -> None:
        """Starts the clock (later calls keep the first start)."""
        if not self._values[0]:
            self._values[1] = max(0.0, grace)
            self._values[0] = time.monotonic() or 1e-9

    def reset(self) -> None:
        """Running again (for tests, and embedders that reuse a process)."""
        self._values[0] = 0.0
        self._values[1] = 0.0

    @property
    def stopping(self) -> bool:
        return bool(self._values[0])

    def left(self, share: float = 1.0) -> float | None:
        """Seconds until ``share`` of the grace period has passed (may be negative); None while running."""
        started, grace = self._values[0], self._values[1]
        if not started:
            return None
        return started + grace * share - time.monotonic()

    def wait_left(self) -> float | None:
        """Seconds a request waiting for a build may still wait; None while running."""
        return self.left(WAIT_SHARE)

    def due(self) -> bool:
        """The grace period is over (work still running must be given up now)."""
        left = self.left()
        return left is not None and left <= 0


#: This process's clock. A gunicorn worker starts it on SIGTERM (``api.server``); not shared, so a
#: worker stopped alone (``TTOU``, a reload) does not make its siblings think they are stopping.
PROCESS = ShutdownClock()
