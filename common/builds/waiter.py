"""Waiting for builds inside an API process without a Redis connection per waiting request.

One daemon thread per process listens on the ``done`` channel and wakes the waiters of that key;
waiters also re-read the record every :data:`POLL_EVERY` seconds, so a lost message or a dropped
subscription costs at most that much latency, never a hung request. A wait rides out a Redis
outage (it polls on until its deadline, and only then answers the outage); when Redis comes back
without the record (a restarted Redis keeps nothing: ``devstack.services.RedisServer``), the waiter
hands the key to ``on_lost``, which queues the build again, so no build a client waits for is
lost. The waiters of one build share its reads: however many wake at once, one Redis read of a
record is in flight per process (``common.singleflight``). Once the process is stopping
(``common.shutdown``), waits end within their share of the grace period.

Waiting places: ``limit`` (``http.maxWaiters``) bounds the requests of a process that wait for
builds no other request of the process waits for, so that cold requests for many different assets
leave threads to cached downloads. A request for a build the process already waits for joins it
whatever the count: it costs no Redis read and no subscription, only its thread, and refusing it
would make clients of one popular build fail merely because the kernel handed more of their
connections to one process than to another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

import redis

from common.builds.state import DONE_CHANNEL, BuildRecord, BuildState, Status
from common.outages import OUTAGE_ERRORS
from common.shutdown import PROCESS, ShutdownClock
from common.singleflight import SingleFlight

log = logging.getLogger(__name__)

POLL_EVERY = 2.0


class Waiter:
    def __init__(
        self, client: redis.Redis, state: BuildState, limit: int, shutdown: ShutdownClock = PROCESS
    ) -> None:
        self.redis = client
        self.state = state
        self.limit = limit  # requests of this process that may wait for builds not yet waited for
        self.shutdown = shutdown  # once it runs, waits end within their share of the grace period
        self._events: dict[str, list[threading.Event]] = {}
        self._lock = threading.Lock()
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._pid = 0
        self._reads: SingleFlight[str, BuildRecord | None] = SingleFlight()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_reserve(self, keys: Sequence[str] = ()) -> bool:
        """Takes a waiting place; False when ``limit`` requests wait already, unless another
        request of this process waits for every one of ``keys`` (joining costs only a thread)."""
        with self._lock:
            joining = bool(keys) and all(key in self._events for key in keys)
            if self._waiting >= self.limit and not joining:
                return False
            self._waiting += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._waiting -= 1

    def wait(
        self,
        key: str,
        timeout: float,
        on_stale: Callable[[BuildRecord], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> BuildRecord | None:
        """The finished record, or the last one seen when ``timeout`` ran out (None: no record).

        ``on_stale`` is called when the build's worker stopped beating (it was killed), ``on_lost``
        when its record is gone (Redis restarted empty): the caller queues it again, and waiting goes on.
        """
        return self.wait_all([key], timeout, on_stale, on_lost)[key]

    def wait_all(
        self,
        keys: Sequence[str],
        timeout: float,
        on_stale: Callable[[BuildRecord], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> dict[str, BuildRecord | None]:
        """Waits for several builds at once (one installer index needs one build per architecture).

        Returns when every build finished, as soon as one failed (the others cannot make the whole
        succeed), or when ``timeout`` ran out (or, in a stopping process, the wait's share of the
        grace period); each key maps to the last record seen. Redis failing during the wait is
        waited out; if it is still failing when the time is up, its error is raised (a 503).
        """
        self._ensure_listener()
        event = threading.Event()
        with self._lock:
            for key in keys:
                self._events.setdefault(key, []).append(event)
        deadline = time.monotonic() + timeout
        records: dict[str, BuildRecord | None] = dict.fromkeys(keys)
        outage: Exception | None = None
        try:
            while True:
                event.clear()
                try:
                    if self._check(keys, records, on_stale, on_lost):
                        return records
                    outage = None
                except OUTAGE_ERRORS as exc:  # restarting, failing over: poll on until the deadline
                    if outage is None:
                        log.warning("redis failed during a build wait; waiting on", extra={"error": str(exc)})
                    outage = exc
                remaining = deadline - time.monotonic()
                stopping = self.shutdown.wait_left()
                if stopping is not None:
                    remaining = min(remaining, stopping)
                if remaining <= 0:
                    if outage is not None:
                        raise outage
                    return records
                event.wait(min(POLL_EVERY, remaining))
        finally:
            with self._lock:
                for key in keys:
                    events = self._events.get(key, [])
                    if event in events:
                        events.remove(event)
                    if not events:
                        self._events.pop(key, None)

    def _check(
        self,
        keys: Sequence[str],
        records: dict[str, BuildRecord | None],
        on_stale: Callable[[BuildRecord], None],
        on_lost: Callable[[str], None] | None,
    ) -> bool:
        """One look at the builds (into ``records``): True when the wait is over. Builds nobody works
        on any more are handed to ``on_stale``, builds Redis no longer knows to ``on_lost``."""
        woken = time.monotonic()  # reads begun before this may miss the news that woke us
        fresh = {key: self.read(key, woken) for key in keys}
        for key, record in fresh.items():
            if record is not None or records[key] is None:
                records[key] = record  # a lost record is answered with the last one seen
        seen = list(fresh.values())
        if all(r is not None and r.finished for r in seen) or any(
            r is not None and r.status is Status.FAILED for r in seen
        ):
            return True
        now = time.time()
        for key, record in fresh.items():
            if record is None:
                if on_lost is not None:
                    on_lost(key)
            elif not record.finished and record.stale(now, self.state.timeout):
                on_stale(record)
        return False

    def read(self, key: str, since: float | None = None) -> BuildRecord | None:
        """The build record, read once for all the requests of this process asking at the moment
        (from a read begun at ``since``, a ``time.monotonic()`` value, or later)."""
        return self._reads.do(key, lambda: self.state.get(key), started_after=since)

    def _ensure_listener(self) -> None:
        with self._lock:
            # gunicorn forks after the app is built: a thread started in the parent does not exist here.
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._listen, name="build-waiter", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops this process's listener (within a second); waiting requests fall back to polling.
        For embedders and tests: an API process keeps its listener for its whole life."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3.0)

    def _listen(self) -> None:
        while not self._stopped.is_set():
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DONE_CHANNEL)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data = message["data"]
                    key = data.decode() if isinstance(data, bytes) else str(data)
                    with self._lock:
                        for event in self._events.get(key, []):
                            event.set()
            except Exception as exc:  # this thread must outlive any Redis trouble
                if self._stopped.is_set():
                    return
                log.warning(
                    "build notifications lost; polling until Redis is back", extra={"error": str(exc)}
                )
                self._stopped.wait(1.0)
            finally:
                if pubsub is not None:  # its connection goes back to the (bounded) pool
                    with contextlib.suppress(Exception):
                        pubsub.close()
