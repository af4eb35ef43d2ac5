"""A stopping worker's builds: finished within ``build.shutdownGracePeriod``, or handed back.

SIGTERM puts Celery into its warm shutdown: it consumes nothing more and waits for the running
tasks. Its main process starts :data:`BUILDS` (``worker.app``); the pool processes, forked before,
read the same shared clock. A build not started yet hands itself back at once; a running one goes on
until the period ends, when :func:`interruptible` raises :class:`HandBack` in it (a signal to the
pool process's main thread, so a tool it waits for is killed, as for the soft time limit). The
pipeline then removes its scratch, records the build as queued again, releases its lock and slot,
and re-publishes its task (``worker.pipeline``): another worker builds it; nothing was published.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from common.shutdown import ShutdownClock

#: The worker's clock, in shared memory: created on import in the main process, before the pool forks.
BUILDS = ShutdownClock(shared=True)

#: Delivered to the pool process's main thread when its build must be handed back.
HAND_BACK_SIGNAL = signal.SIGUSR2
POLL = 0.5


class HandBack(BaseException):
    """The worker is stopping and this build cannot finish in time: give it back to the queue.

    A ``BaseException``, like ``KeyboardInterrupt``, so the ``except Exception`` of the imager's
    best-effort steps cannot swallow it."""


class _Window:
    """Whether the main thread is inside :func:`interruptible` (and not yet interrupted)."""

    open = False


def _raise_hand_back(_signum: int, _frame: FrameType | None) -> None:
    if _Window.open:
        _Window.open = False  # once: cleanup code on the way out is not interrupted again
        raise HandBack()


@contextlib.contextmanager
def interruptible(clock: ShutdownClock = BUILDS) -> Iterator[None]:
    """Runs the body until ``clock``'s grace period is over, then raises :class:`HandBack` in it.

    Only on the process's main thread (Python runs signal handlers there; a Celery pool process runs
    its task there); elsewhere the body runs uninterrupted.
    """
    if clock.due():
        raise HandBack()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Installed for good, not restored: a late signal must never meet the default action (exit).
    signal.signal(HAND_BACK_SIGNAL, _raise_hand_back)
    main = threading.get_ident()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL):
            if clock.due():
                signal.pthread_kill(main, HAND_BACK_SIGNAL)
                return

    watcher = threading.Thread(target=watch, name="hand-back-watch", daemon=True)
    _Window.open = True
    watcher.start()
    try:
        yield
    finally:
        _Window.open = False
        done.set()
        watcher.join()
