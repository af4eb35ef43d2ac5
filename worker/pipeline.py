"""One build task, start to finish: lock → cache check → plan → slot → imager → sign/upload → publish.

The task id is the profile hash. The per-key lock makes a build single-flight across every worker
(a duplicate message finds it held and leaves); the cluster-wide slot enforces
``build.maxConcurrency`` on top of each worker's own concurrency. A heartbeat thread keeps both
alive and tells waiters the build is still making progress; when it stops (SIGKILL, power loss) the
lock and lease expire and the next waiter queues the build again. A worker that is stopping hands
builds it cannot finish in its grace period back to the queue (``worker.shutdown``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from common.builds.plan import BuildRequest, asset_labels, content_type, plan_request
from common.builds.state import HEARTBEAT_EVERY, LOCK_TTL, BuildState
from common.cache.base import AssetCache, AssetInfo
from common.cosign.types import SignatureError
from common.errors import FactoryError, UnavailableError
from common.logging import request_id_var
from common.metrics.definitions import (
    ASSETS_BUILD_LATENCY,
    ASSETS_BUILT,
    ASSETS_BUILT_BYTES,
    ASSETS_CONCURRENCY_LATENCY,
    BUILDS_FAILED,
    BUILDS_RUNNING,
    CACHE_ERRORS,
)
from common.profile.secureboot import secureboot_assets
from common.services import Services, scratch_dir
from common.shutdown import ShutdownClock
from worker.imager.build import build
from worker.imager.overlay import Limits as OverlayLimits
from worker.imager.scratch import scratch
from worker.imager.signing import NO_SIGNERS, Signers
from worker.shutdown import BUILDS, HandBack, interruptible

log = logging.getLogger(__name__)

SLOT_POLL = 0.5


class CachedPieces:
    """Build pieces (:mod:`worker.imager.pieces`) kept in the asset cache: signed and published
    like assets, so a piece is never read half-written or unsigned. A cache that fails is only a
    lost reuse, never a failed build."""

    def __init__(self, cache: AssetCache) -> None:
        self.cache = cache

    def fetch(self, key: str, dest: Path) -> bool:
        try:
            found = self.cache.get(key)
            if found is None:
                return False
            with open(dest, "wb") as out:
                for chunk in found.read():
                    out.write(chunk)
            return True
        except Exception as exc:
            log.warning("cannot reuse a build piece; building it", extra={"piece": key, "error": str(exc)})
            dest.unlink(missing_ok=True)
            return False

    def store(self, key: str, path: Path, name: str) -> None:
        try:
            self.cache.put(key, path, AssetInfo(name, content_type(name)))
        except Exception as exc:
            log.warning("cannot keep a build piece", extra={"piece": key, "error": str(exc)})


class WorkerStoppingError(Exception):
    """Why a handed-back build's task is published again."""


class Retry(Exception):
    """A transient failure: the task is to be tried again in ``countdown`` seconds."""

    def __init__(self, cause: BaseException, countdown: float) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.countdown = countdown


@dataclass(frozen=True)
class Outcome:
    status: str  # built | cached | elsewhere | failed | retry
    detail: str = ""


def transient(exc: BaseException) -> bool:
    """Worth another try: a registry, S3 or Redis that did not answer."""
    return isinstance(exc, (UnavailableError, redis.ConnectionError, redis.TimeoutError, ConnectionError))


def backoff(attempt: int) -> float:
    return float(min(60, 5 * 2 ** max(0, attempt - 1)))


class BuildTakenOverError(Exception):
    """Redis lost this build's lock (it restarted empty) and another worker took the build on
    meanwhile: that worker publishes it, this one must not (nothing is published twice)."""


class _Heartbeat:
    """Keeps the build's lock, slot lease and record alive while it runs.

    After a Redis restart that lost them, it takes the lock back with its own token and restores
    the record (``restore``: what a waiter needs to see the build running), unless another worker
    holds the lock by then (the build was queued again): then the build is :attr:`lost`.
    """

    def __init__(
        self, state: BuildState, key: str, lock: Lock, token: str, restore: Mapping[str, str]
    ) -> None:
        self.state = state
        self.key = key
        self.lock = lock
        self.token = token
        self.restore = restore
        self.has_slot = False
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{key[:12]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def keep_lock(self) -> bool:
        """Extends the lock, or takes it back if Redis lost it; False once another worker has it."""
        if self.lost.is_set():
            return False
        try:
            self.lock.extend(LOCK_TTL, replace_ttl=True)
        except LockNotOwnedError:
            if not self.lock.do_acquire(self.lock.local.token):
                log.warning(
                    "build lock taken by another worker; leaving the build to it", extra={"key": self.key}
                )
                self.lost.set()
                return False
            log.warning("build lock lost (redis restarted?); taken back", extra={"key": self.key})
        return True

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                if not self.keep_lock():
                    return
                self.state.beat(self.key, self.restore)
                if self.has_slot:
                    self.state.acquire_slot(self.token, limit=1 << 30)  # renew the lease
            except Exception as exc:
                log.warning("build heartbeat failed", extra={"key": self.key, "error": str(exc)})


def run_build(
    services: Services,
    key: str,
    request: BuildRequest,
    *,
    retries: int,
    signers: Signers = NO_SIGNERS,
    shutdown: ShutdownClock = BUILDS,
) -> Outcome:
    """Runs the build for ``key``; raises :class:`Retry` for transient failures within ``retries``,
    and (countdown 0) for a build handed back because the worker is stopping (``shutdown``).

    ``signers`` are the worker process's Secure Boot signing services (``NO_SIGNERS`` when disabled).
    """
    config = services.config
    state = services.builds
    lock = state.lock(key)
    try:
        if not lock.acquire(blocking=False):
            log.info("build already running on another worker", extra={"key": key})
            return Outcome("elsewhere")
    except redis.RedisError as exc:
        raise Retry(exc, backoff(1)) from exc
    token = uuid.uuid4().hex
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def stage(name: str, **fields: object) -> None:
        state.update(key, stage=name, **fields)

    attempt = 0
    metrics = services.metrics
    running = False
    try:
        attempt = state.start(key, worker, request.to_json())
        restore = {
            "status": "running",
            "worker": worker,
            "request": json.dumps(request.to_json(), separators=(",", ":")),
            "enqueuedAt": repr(time.time()),
            "stage": "building",
        }
        with _Heartbeat(state, key, lock, token, restore) as heartbeat:
            cached = services.cache.get(key)
            if cached is not None:  # a build before ours published it (e.g. a redelivered task)
                state.succeed(key, size=cached.size, seconds=None)
                return Outcome("cached")
            if shutdown.stopping:  # a stopping worker starts no build: another one will
                raise HandBack()
            stage("resolving")
            _, plan = plan_request(
                services.schematics,
                services.artifacts,
                request.schematic_id,
                request.version,
                request.path,
                secureboot=secureboot_assets(config.secureBoot),
            )
            if plan.key != key:
                raise FactoryError(f"profile hash mismatch: asked for {key}, resolved {plan.key}")
            stage("waiting for a build slot")
            waiting_since = time.monotonic()
            while True:
                if shutdown.stopping:  # not started yet (resolving may have taken a while): give it back
                    raise HandBack()
                if state.acquire_slot(token, config.build.maxConcurrency):
                    break
                time.sleep(SLOT_POLL)
            heartbeat.has_slot = True
            metrics.observe(ASSETS_CONCURRENCY_LATENCY, time.monotonic() - waiting_since)
            metrics.inc(BUILDS_RUNNING)
            running = True
            state.dequeue(key)
            started = time.time()
            stage("building", startedAt=repr(started))
            state.count_run(key)
            root = scratch_dir(config)
            with scratch(root) as out:
                # HandBack when the grace period of a stopping worker ends; source images bounded per build
                with interruptible(shutdown), services.artifacts.build_budget():
                    result = build(
                        plan,
                        sources=services.artifacts,
                        external_url=config.http.externalURL,
                        dest=out,
                        scratch_root=root,
                        signers=signers,
                        pieces=CachedPieces(services.cache),
                        overlay_limits=OverlayLimits.from_options(config.build.overlayInstaller),
                    )
                metrics.observe(ASSETS_BUILD_LATENCY, time.time() - started)
                if not heartbeat.keep_lock():
                    raise BuildTakenOverError(key)
                stage("signing and uploading")  # not interrupted: publishing is short, and atomic
                _publish(services, key, result.path, AssetInfo(request.path, content_type(request.path)))
            state.succeed(key, size=result.size, seconds=time.time() - started)
            labels = asset_labels(plan)
            metrics.inc(ASSETS_BUILT, **labels)
            metrics.inc(ASSETS_BUILT_BYTES, result.size, **labels)
            log.info("build published", extra={"key": key, "path": request.path, "seconds": result.seconds})
            return Outcome("built")
    except BuildTakenOverError:
        log.warning("build taken over by another worker; not published", extra={"key": key})
        return Outcome("elsewhere")
    except HandBack:
        # The scratch folder is gone and nothing was published; the lock and slot are released below,
        # before the task is published again, so the next worker can take the build at once.
        log.warning("worker stopping: build handed back to the queue", extra={"key": key})
        try:
            state.hand_back(key, "queued again: its worker stopped")
        except redis.RedisError:
            log.exception("cannot record the handed-back build", extra={"key": key})
        raise Retry(WorkerStoppingError("handed back by a stopping worker"), 0.0) from None
    except Exception as exc:
        if transient(exc) and attempt <= retries:
            delay = backoff(attempt)
            log.warning(
                "build failed transiently; retrying",
                extra={"key": key, "error": str(exc), "attempt": attempt, "countdown": delay},
            )
            state.requeue(key, f"retrying in {delay:.0f}s after: {exc}")
            raise Retry(exc, delay) from exc
        status, message = failure(exc)
        metrics.inc(BUILDS_FAILED, reason=failure_reason(exc, status))
        cause, trace = describe_failure(exc)
        fields = {
            "key": key,
            "status": status,
            "error": message,
            "cause": cause,
            "request_id": request_id_var.get(),
        }
        if status >= 500:  # the factory's (or its sources') fault: the cause and where, for operators
            log.error("build failed: %s", cause, exc_info=exc, extra=fields)
        else:
            log.warning("build failed: %s", cause, extra=fields)
        try:
            kept = trace if status >= 500 else ""  # a client's mistake needs no traceback
            state.fail(key, status=status, message=message, cause=cause, traceback=kept)
        except redis.RedisError:
            log.exception("cannot record the build's failure", extra={"key": key})
        return Outcome("failed", message)
    finally:
        if running:
            metrics.inc(BUILDS_RUNNING, -1)
        try:
            state.release_slot(token)
            lock.release()
        except Exception:
            log.warning("cannot release the build lock; it expires", extra={"key": key})


def _publish(services: Services, key: str, path: Path, info: AssetInfo) -> None:
    try:
        services.cache.put(key, path, info)
    except Exception:
        services.metrics.inc(CACHE_ERRORS, operation="put")
        raise


def failure_reason(exc: BaseException, status: int) -> str:
    """The ``reason`` label of ``image_factory_builds_failed_total``."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SignatureError):
            return "source_verification"
        cause = cause.__cause__
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout"
    if transient(exc):
        return "unavailable"  # still failing after build.retries tries
    return "invalid" if status < 500 else "internal"


#: Characters of traceback a build record keeps (its end: the innermost frames, where it failed).
TRACEBACK_LIMIT = 8192


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """``(cause, traceback)`` of a failed build, for its record and logs: ``"ToolError: GRUB i386-pc …"``
    (type and text, also for the 500s whose clients only get ``internal server error``) and the
    formatted traceback, chained causes included, its last :data:`TRACEBACK_LIMIT` characters."""
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    trace = "".join(traceback.format_exception(exc))
    if len(trace) > TRACEBACK_LIMIT:
        trace = "…" + trace[-TRACEBACK_LIMIT:]
    return cause, trace


def failure(exc: BaseException) -> tuple[int, str]:
    """What every waiter gets: the error's own status and text, or upstream's bare 500."""
    if isinstance(exc, FactoryError):
        if exc.status == 500:
            return 500, "internal server error"
        return exc.status, exc.message
    if isinstance(exc, SoftTimeLimitExceeded):
        return 504, "the build took longer than build.timeout"
    return 500, "internal server error"
