"""Build state in Redis, shared by every API replica and worker.

One hash per build key (the profile hash) holds its status, stage and timings; a sorted set is the
queue (for positions and backpressure); a pub/sub channel announces finished builds. Workers hold a
per-key lock (single flight across the cluster) and a lease in a cluster-wide semaphore
(``build.maxConcurrency``), both kept alive by a heartbeat, so a killed worker's build is noticed
within :data:`STALE_AFTER` seconds and queued again by whoever is waiting for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import redis

PREFIX = "if:build:"
QUEUE = PREFIX + "queue"
SLOTS = PREFIX + "slots"
DONE_CHANNEL = PREFIX + "done"
HEARTBEAT_EVERY = 5.0  # seconds between a running build's heartbeats
STALE_AFTER = 30.0  # a running build without a heartbeat for this long is presumed dead
LOCK_TTL = 30  # seconds; the heartbeat extends it
HISTORY = 20  # past durations kept per (version, kind, arch) for ETAs
SUCCESS_TTL = 24 * 3600
UNAVAILABLE_TTL = 5  # seconds a build that failed for a dependency's outage is remembered


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Enqueue(StrEnum):
    """What :meth:`BuildState.enqueue` did."""

    ENQUEUED = "enqueued"  # a new build: the caller publishes the task
    JOINED = "joined"  # one is queued or running already
    FAILED = "failed"  # it failed moments ago; the failure is the answer
    FULL = "full"  # the queue is at its bound: 503


@dataclass
class BuildRecord:
    key: str
    status: Status
    request: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    version: str = ""
    arch: str = ""
    stage: str = ""
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat: float | None = None
    error: str = ""  # what every waiter is answered (``internal server error`` for a 500)
    error_status: int = 0
    cause: str = ""  # why it failed, for operators: the exception's type and text
    traceback: str = ""  # where (the worker's traceback, bounded), for failures that are the factory's
    size: int = 0
    attempts: int = 0
    worker: str = ""

    @property
    def finished(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FAILED)

    def stale(self, now: float, timeout: float) -> bool:
        """A build nobody is working on any more: its worker died, or its task was lost."""
        if self.status == Status.RUNNING:
            return now - (self.heartbeat or 0.0) > STALE_AFTER
        if self.status == Status.QUEUED:
            return now - (self.enqueued_at or 0.0) > timeout
        return False

    @classmethod
    def from_redis(cls, key: str, raw: Mapping[bytes, bytes]) -> BuildRecord | None:
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}

        def num(name: str) -> float | None:
            return float(f[name]) if f.get(name) else None

        try:
            status = Status(f.get("status", ""))
        except ValueError:
            return None
        return cls(
            key=key,
            status=status,
            request=json.loads(f["request"]) if f.get("request") else {},
            kind=f.get("kind", ""),
            version=f.get("version", ""),
            arch=f.get("arch", ""),
            stage=f.get("stage", ""),
            enqueued_at=num("enqueuedAt"),
            started_at=num("startedAt"),
            finished_at=num("finishedAt"),
            heartbeat=num("heartbeat"),
            error=f.get("error", ""),
            error_status=int(f.get("errorStatus") or 0),
            cause=f.get("cause", ""),
            traceback=f.get("traceback", ""),
            size=int(f.get("size") or 0),
            attempts=int(f.get("attempts") or 0),
            worker=f.get("worker", ""),
        )


# KEYS: record, queue. ARGV: key, now, max queue, stale-after, queued timeout, request, kind, version, arch
_ENQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
local now = tonumber(ARGV[2])
if status == 'queued' then
  local at = tonumber(redis.call('HGET', KEYS[1], 'enqueuedAt') or '0')
  if now - at <= tonumber(ARGV[5]) then return 'joined' end
elseif status == 'running' then
  local hb = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
  if now - hb <= tonumber(ARGV[4]) then return 'joined' end
elseif status == 'failed' then
  return 'failed'
end
if status ~= 'queued' and status ~= 'running'
   and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 'full'
end
local attempts = redis.call('HGET', KEYS[1], 'attempts') or '0'
if status ~= 'queued' and status ~= 'running' then attempts = '0' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueuedAt', ARGV[2], 'request', ARGV[6],
  'kind', ARGV[7], 'version', ARGV[8], 'arch', ARGV[9], 'stage', 'queued', 'attempts', attempts)
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 'enqueued'
"""

# KEYS: slots. ARGV: token, now, lease seconds, max
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""


def record_key(key: str) -> str:
    return f"{PREFIX}rec:{key}"


def lock_key(key: str) -> str:
    return f"{PREFIX}lock:{key}"


def runs_key(key: str) -> str:
    return f"{PREFIX}runs:{key}"


def history_key(version: str, kind: str, arch: str) -> str:
    return f"{PREFIX}hist:{version}:{kind}:{arch}"


class BuildState:
    def __init__(self, client: redis.Redis, *, max_queue: int, timeout: float, failure_ttl: float) -> None:
        self.redis = client
        self.max_queue = max_queue
        self.timeout = timeout
        self.failure_ttl = failure_ttl
        self._enqueue = client.register_script(_ENQUEUE)
        self._acquire_slot = client.register_script(_ACQUIRE_SLOT)

    # --- reading ------------------------------------------------------------------------------

    def get(self, key: str) -> BuildRecord | None:
        raw = cast(Mapping[bytes, bytes], self.redis.hgetall(record_key(key)))
        return BuildRecord.from_redis(key, raw)

    def queue_position(self, key: str) -> int | None:
        """1 for the next build to start; None when not waiting in the queue."""
        rank = self.redis.zrank(QUEUE, key)
        return None if rank is None else int(cast(int, rank)) + 1

    def runs(self, key: str) -> int:
        """How many times a worker ran the imager for ``key`` (a cache hit in the task is no run)."""
        value = self.redis.get(runs_key(key))
        return int(cast(bytes, value)) if value else 0

    def typical_seconds(self, version: str, kind: str, arch: str) -> float | None:
        values = cast(list[bytes], self.redis.lrange(history_key(version, kind, arch), 0, HISTORY - 1))
        if not values:
            return None
        seconds = sorted(float(x) for x in values)
        return seconds[len(seconds) // 2]

    # --- API side -----------------------------------------------------------------------------

    def enqueue(self, key: str, request: Mapping[str, str], *, kind: str, version: str, arch: str) -> Enqueue:
        result = self._enqueue(
            keys=[record_key(key), QUEUE],
            args=[
                key,
                repr(time.time()),
                self.max_queue,
                STALE_AFTER,
                self.timeout,
                json.dumps(dict(request), separators=(",", ":")),
                kind,
                version,
                arch,
            ],
        )
        return Enqueue(result.decode() if isinstance(result, bytes) else str(result))

    # --- worker side --------------------------------------------------------------------------

    def lock(self, key: str) -> Any:
        """The single-flight lock for ``key``; ``thread_local=False`` so the heartbeat may extend it."""
        return self.redis.lock(lock_key(key), timeout=LOCK_TTL, thread_local=False)

    def update(self, key: str, **fields: Any) -> None:
        mapping = {k: ("" if v is None else str(v)) for k, v in fields.items()}
        self.redis.hset(record_key(key), mapping=mapping)  # type: ignore[arg-type]

    def start(self, key: str, worker: str, request: Mapping[str, str]) -> int:
        """Marks ``key`` running (re-creating the record if it expired); returns the attempt number."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hsetnx(record_key(key), "enqueuedAt", repr(now))
        pipe.hsetnx(record_key(key), "request", json.dumps(dict(request), separators=(",", ":")))
        pipe.hset(
            record_key(key),
            mapping={
                "status": Status.RUNNING.value,
                "heartbeat": repr(now),
                "worker": worker,
                "stage": "checking the cache",
                "error": "",
                "errorStatus": "0",
                "cause": "",
                "traceback": "",
            },
        )
        pipe.hincrby(record_key(key), "attempts", 1)
        pipe.persist(record_key(key))
        return int(pipe.execute()[3])

    def beat(self, key: str, restore: Mapping[str, str] | None = None) -> None:
        """A running build's heartbeat. ``restore``: fields put back where the record lacks them
        (Redis restarted empty), so that waiters see the build running rather than lost."""
        pipe = self.redis.pipeline()
        pipe.hset(record_key(key), "heartbeat", repr(time.time()))
        for name, value in (restore or {}).items():
            pipe.hsetnx(record_key(key), name, value)
        pipe.execute()

    def acquire_slot(self, token: str, limit: int, lease: float = STALE_AFTER) -> bool:
        return bool(self._acquire_slot(keys=[SLOTS], args=[token, repr(time.time()), lease, limit]))

    def release_slot(self, token: str) -> None:
        self.redis.zrem(SLOTS, token)

    def dequeue(self, key: str) -> None:
        self.redis.zrem(QUEUE, key)

    def count_run(self, key: str) -> None:
        pipe = self.redis.pipeline()
        pipe.incr(runs_key(key))
        pipe.expire(runs_key(key), SUCCESS_TTL)
        pipe.execute()

    def requeue(self, key: str, stage: str) -> None:
        """A retry is scheduled: queued again (the attempt count stays)."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(
            record_key(key), mapping={"status": Status.QUEUED.value, "stage": stage, "enqueuedAt": repr(now)}
        )
        pipe.zadd(QUEUE, {key: now})
        pipe.execute()

    def hand_back(self, key: str, stage: str) -> None:
        """A stopping worker gave the build up unfinished: queued again (the task is re-published),
        the attempt not counted against ``build.retries``."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(
            record_key(key),
            mapping={"status": Status.QUEUED.value, "stage": stage, "enqueuedAt": repr(now), "worker": ""},
        )
        pipe.hincrby(record_key(key), "attempts", -1)
        pipe.zadd(QUEUE, {key: now})
        pipe.execute()

    def succeed(self, key: str, *, size: int, seconds: float | None) -> None:
        rec = self.get(key)
        pipe = self._finishing(key, Status.SUCCEEDED, "done", SUCCESS_TTL, size=size, error="", errorStatus=0)
        if seconds is not None and rec is not None and rec.kind:
            hist = history_key(rec.version, rec.kind, rec.arch)
            pipe.lpush(hist, repr(seconds))
            pipe.ltrim(hist, 0, HISTORY - 1)
        pipe.publish(DONE_CHANNEL, key)
        pipe.execute()

    def fail(self, key: str, *, status: int, message: str, cause: str = "", traceback: str = "") -> None:
        """Recorded and remembered for ``failure_ttl``: identical requests get it without a rebuild.

        ``message`` is what clients are answered; ``cause`` and ``traceback`` stay in the record for
        operators (and the API's log of the requests that get the failure). A 503 (a dependency was
        still down after the build's retries) is no verdict on the request: it is kept only
        :data:`UNAVAILABLE_TTL` seconds, so the build's waiters get it and the first request after
        the dependency is back builds again instead of being answered the outage for minutes."""
        ttl = max(1, int(self.failure_ttl if status != 503 else min(self.failure_ttl, UNAVAILABLE_TTL)))
        fields = {"error": message, "errorStatus": status, "cause": cause, "traceback": traceback}
        pipe = self._finishing(key, Status.FAILED, "failed", ttl, **fields)
        pipe.publish(DONE_CHANNEL, key)
        pipe.execute()

    def _finishing(self, key: str, status: Status, stage: str, ttl: int, **fields: object) -> Any:
        """A pipeline that marks ``key`` finished, out of the queue, expiring in ``ttl`` seconds."""
        mapping = {"status": status.value, "stage": stage, "finishedAt": repr(time.time())}
        mapping.update({k: str(v) for k, v in fields.items()})
        pipe = self.redis.pipeline()
        pipe.hset(record_key(key), mapping=mapping)  # type: ignore[arg-type]
        pipe.expire(record_key(key), ttl)
        pipe.zrem(QUEUE, key)
        return pipe
