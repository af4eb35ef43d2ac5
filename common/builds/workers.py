"""Which workers are alive, and the cluster's build state as metrics.

A worker's main process records a heartbeat in one Redis sorted set (member: ``host:pid``, score:
the time) every :data:`BEAT_EVERY` seconds; a worker is live while its last beat is younger than
:data:`STALE_AFTER`. A worker that stops cleanly removes itself at once. Running builds have
heartbeats of their own (:mod:`common.builds.state`); this one also covers idle workers, so "no
worker at all" is visible before the first build waits for one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from common.builds.state import PREFIX, QUEUE, SLOTS
from common.metrics import NULL_METRICS, Metric, Metrics
from common.metrics.definitions import (
    BUILD_QUEUE_LENGTH,
    BUILD_QUEUE_OLDEST,
    BUILD_SLOTS_IN_USE,
    BUILD_SLOTS_LIMIT,
    WORKER_HEARTBEAT,
    WORKERS_LIVE,
)

log = logging.getLogger(__name__)

WORKERS = PREFIX + "workers"
BEAT_EVERY = 10.0
STALE_AFTER = 35.0  # three missed beats and some
FORGET_AFTER = 24 * 3600.0  # members older than this are removed from the set


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerHeartbeat:
    """The heartbeat of one worker process, on a daemon thread (``with WorkerHeartbeat(...):``)."""

    def __init__(self, client: redis.Redis, name: str | None = None, metrics: Metrics = NULL_METRICS) -> None:
        self.redis = client
        self.name = name or worker_name()
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)

    def __enter__(self) -> WorkerHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.redis.zrem(WORKERS, self.name)
        except redis.RedisError as exc:
            log.warning("cannot remove the worker heartbeat; it expires", extra={"error": str(exc)})

    def beat(self) -> None:
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.zadd(WORKERS, {self.name: now})
        pipe.zremrangebyscore(WORKERS, "-inf", now - FORGET_AFTER)
        pipe.execute()
        self.metrics.set(WORKER_HEARTBEAT, now)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
                if failing:
                    log.info("worker heartbeat recorded again")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("cannot record the worker heartbeat", extra={"error": str(exc)})
                failing = True
            if self._stop.wait(BEAT_EVERY):
                return


def live_workers(client: redis.Redis, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return int(client.zcount(WORKERS, now - STALE_AFTER, "+inf"))


def cluster_snapshot(client: redis.Redis, max_concurrency: int) -> Callable[[], dict[Metric, float]]:
    """Queue, build slots and live workers, read in one round trip whenever metrics are scraped."""

    def read() -> dict[Metric, float]:
        now = time.time()
        pipe = client.pipeline(transaction=False)
        pipe.zcard(QUEUE)
        pipe.zrange(QUEUE, 0, 0, withscores=True)
        pipe.zcount(SLOTS, f"({now!r}", "+inf")  # a lease's score is its expiry
        pipe.zcount(WORKERS, now - STALE_AFTER, "+inf")
        queued, oldest, slots, workers = pipe.execute()
        return {
            BUILD_QUEUE_LENGTH: float(queued),
            BUILD_QUEUE_OLDEST: max(0.0, now - float(oldest[0][1])) if oldest else 0.0,
            BUILD_SLOTS_IN_USE: float(slots),
            BUILD_SLOTS_LIMIT: float(max_concurrency),
            WORKERS_LIVE: float(workers),
        }

    return read
