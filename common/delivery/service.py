"""The delivery use case: from ``(schematic, version, path)`` to a cached asset, building on a miss.

The API never builds. On a miss the build is recorded in Redis and its Celery task published under
the profile hash (joining the one in flight, cluster-wide); the caller then waits for it, bounded by
``build.waitTimeout``, or gets a :class:`Pending` at once and polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cachetools import TTLCache

from common.builds.plan import BuildRequest, asset_labels, plan_request
from common.builds.state import BuildRecord, Enqueue, Status
from common.builds.waiter import Waiter
from common.cache.base import CachedAsset
from common.delivery.progress import Progress, eta, progress_of
from common.errors import FactoryError, NotFoundError, UnavailableError
from common.logging import build_key_var
from common.metrics.definitions import (
    ASSETS_CACHED_BYTES,
    ASSETS_CACHED_ERRORS,
    ASSETS_DELIVERED_CACHED,
    BUILD_ENQUEUE,
    CACHE_ERRORS,
    CACHE_HITS,
    CACHE_MISSES,
    CLIENT_WAIT,
    CLIENTS_WAITING,
    EXTENSION_HITS,
)
from common.profile.enhance import BuildPlan
from common.profile.secureboot import secureboot_assets
from common.services import Services
from common.singleflight import SingleFlight

log = logging.getLogger(__name__)

MEMO_SIZE = 10_000
ENTRY_TTL = 30.0  # cache.recheckInterval's default: a verified entry is served this long unchecked
PLAN_TTL = 60.0  # seconds a planned (schematic, version, path) is reused (catalogs change rarely)


class QueueFullError(UnavailableError):
    retry_after = 30


class StoppingError(UnavailableError):
    """This process is stopping and the build did not finish within the wait's share of the grace
    period (``common.shutdown``): the build goes on, and the retry lands on another replica."""

    retry_after = 5


class BuildFailedError(FactoryError):
    """A build's remembered failure, answered with the status and text the build recorded; its key,
    cause and the worker's traceback are for the API's log (``api.errors``), not for the client."""

    def __init__(self, record: BuildRecord) -> None:
        super().__init__(record.error or "internal server error")
        self.status = record.error_status or 500
        self.key = record.key
        self.cause = record.cause
        self.traceback = record.traceback


@dataclass(frozen=True)
class Located:
    """A request checked and planned: what to build, and its key (the profile hash)."""

    request: BuildRequest
    plan: BuildPlan
    key: str


@dataclass(frozen=True)
class Pending:
    """A build the caller did not (or could no longer) wait for: the first one not finished."""

    key: str
    record: BuildRecord | None


class Delivery:
    """Get or build assets; also this process's short memory of hot paths.

    A cached download costs four registry round trips and an S3 HEAD to look up and verify, ~50
    times a bare redirect (``bench/delivery.py``). Only what cannot go wrong silently is remembered:
    planned requests and verified entries for seconds, presigned URLs for a quarter of their
    validity. Misses and errors are never remembered.
    """

    def __init__(self, services: Services, waiter: Waiter) -> None:
        self.services = services
        self.waiter = waiter
        # fixed for the process; raises on an unusable secureBoot section (the API then refuses to start)
        self._secureboot = secureboot_assets(services.config.secureBoot)
        presign = services.config.cache.s3.presignedURLTTL.total_seconds()
        self._lock = threading.Lock()
        # cache.recheckInterval bounds how long clients are sent to an S3 that went down meanwhile
        recheck = services.config.cache.recheckInterval.total_seconds()
        self._assets: TTLCache[str, CachedAsset] = TTLCache(MEMO_SIZE, max(recheck, 1e-6))
        self._located: TTLCache[tuple[str, str, str], Located] = TTLCache(MEMO_SIZE, PLAN_TTL)
        self._lookups: SingleFlight[str, CachedAsset | None] = SingleFlight()
        self._url_validity = min(presign, 7 * 86400.0)  # SigV4's maximum, as common.cache.s3.presign_seconds
        # (key, filename) → (the asset the URL was made for, the URL, when it expires: time.monotonic())
        self._urls: TTLCache[tuple[str, str], tuple[CachedAsset, str, float]] = TTLCache(
            MEMO_SIZE, max(1.0, min(300.0, presign / 4))
        )

    # --- what adapters call ---------------------------------------------------------------------

    def locate(self, schematic_id: str, version: str, path: str) -> Located:
        """Checks the request in upstream's order (raising its 4xx) and plans it; from here on the
        request's log lines carry the build key (``common.logging.build_key_var``)."""
        memo = (schematic_id, version, path)
        with self._lock:
            found = self._located.get(memo)
        if found is not None:
            build_key_var.set(found.key)
            self._count_extensions(found)
            return found
        svc = self.services
        request, plan = plan_request(
            svc.schematics, svc.artifacts, schematic_id, version, path, secureboot=self._secureboot
        )
        located = Located(request, plan, plan.key)  # the hash is the costly part: once
        with self._lock:
            self._located[memo] = located
        build_key_var.set(located.key)
        self._count_extensions(located)
        return located

    def remembered(self, schematic_id: str, version: str, path: str) -> tuple[Located, CachedAsset] | None:
        """The request's plan and its verified cached asset, when this process still remembers both
        (:meth:`locate` and :meth:`obtain` would then do no I/O either); None otherwise. Nothing is
        counted or set: a caller that serves the asset from this says so with :meth:`delivered`."""
        with self._lock:
            located = self._located.get((schematic_id, version, path))
            asset = self._assets.get(located.key) if located is not None else None
        return (located, asset) if located is not None and asset is not None else None

    def delivered(self, located: Located, asset: CachedAsset) -> None:
        """What :meth:`locate` and :meth:`obtain` record for a cached asset they return: the build key
        for the request's log lines, and upstream's extension and cached-asset counters."""
        build_key_var.set(located.key)
        self._count_extensions(located)
        self._count_hit(asset, asset_labels(located.plan))

    def _count_extensions(self, located: Located) -> None:
        """Upstream counts every request for an asset with official extensions, per extension name."""
        for extension in located.plan.extensions:
            self.services.metrics.inc(EXTENSION_HITS, extension=extension.name)

    def obtain(self, target: Located, *, wait: bool = True) -> CachedAsset | Pending:
        """The cached asset; on a miss the build is queued or joined, then waited for if ``wait``."""
        found = self.obtain_all([target], wait=wait)
        return found if isinstance(found, Pending) else found[0]

    def obtain_all(
        self, targets: Sequence[Located], *, wait: bool = True, timeout: float | None = None
    ) -> list[CachedAsset] | Pending:
        """Several assets that only make sense together (an installer index: one per architecture).

        Every missing one is queued at once (so they build in parallel), then all are waited for
        by one waiter, for ``timeout`` seconds (default ``build.waitTimeout``). Raises the first
        remembered failure, 503 when the queue is full or this process has no waiting place left.
        """
        assets: dict[str, CachedAsset] = {}
        missing: list[str] = []
        for target in targets:
            asset = self._lookup_counted(target)
            if asset is not None:
                assets[target.key] = asset
            elif target.key not in missing:
                self._ensure(target)
                missing.append(target.key)
        if missing:
            if not wait:
                return Pending(missing[0], self.services.builds.get(missing[0]))
            waited = self._wait(missing, timeout, {t.key: t for t in targets})
            if isinstance(waited, Pending):
                return waited
            assets.update(waited)
        return [assets[target.key] for target in targets]

    def progress(self, key: str) -> Progress:
        """A build's progress; a build whose worker died is queued again first. 404 if unknown."""
        state = self.services.builds
        record = state.get(key)
        if record is None:
            raise NotFoundError(f"build {key!r} not found")
        if record.stale(time.time(), state.timeout):
            self._requeue_stale(record)
            record = state.get(key) or record
        return self.progress_of(record)

    def progress_of(self, record: BuildRecord | None) -> Progress:
        if record is None:
            return Progress.done()
        return progress_of(self.services.builds, self.services.config.build.maxConcurrency, record)

    def eta(self, record: BuildRecord | None) -> float | None:
        return eta(self.services.builds, self.services.config.build.maxConcurrency, record)

    def redirect_url(self, key: str, asset: CachedAsset, filename: str) -> str | None:
        """Where a client may fetch the asset itself (S3 or CDN), if the cache offers that.

        A remembered URL is only reused for the same asset: when S3 is down or its object stale,
        the lookup gives the registry copy instead (not redirectable), and clients must not keep
        being sent to S3 for the rest of the URL's memo time."""
        found = self.redirect(key, asset, filename)
        return found[0] if found is not None else None

    def redirect(self, key: str, asset: CachedAsset, filename: str) -> tuple[str, float] | None:
        """:meth:`redirect_url` and the seconds it stays valid (what a cache may keep the redirect for:
        ``api.rendering``)."""
        memo = (key, filename)
        now = time.monotonic()
        with self._lock:
            found = self._urls.get(memo)
        if found is not None and found[0] == asset:
            return found[1], found[2] - now
        url = asset.redirect_url(filename)
        if not url:
            return None
        with self._lock:
            self._urls[memo] = (asset, url, now + self._url_validity)
        return url, self._url_validity

    def lookup(self, key: str, since: float | None = None) -> CachedAsset | None:
        """The cached asset; concurrent lookups of one key (every waiter of a build that just
        finished) share one look-up of the cache, begun at ``since`` (``time.monotonic()``) or later."""
        with self._lock:
            found = self._assets.get(key)
        if found is not None:
            return found
        return self._lookups.do(key, lambda: self._lookup(key), started_after=since)

    def _lookup(self, key: str) -> CachedAsset | None:
        asset = self.services.cache.get(key)
        if asset is not None:
            with self._lock:
                self._assets[key] = asset
        return asset

    def _lookup_counted(self, target: Located) -> CachedAsset | None:
        """:meth:`lookup` for a request: a hit, a miss or an error of the cache, in the metrics."""
        metrics = self.services.metrics
        labels = asset_labels(target.plan)
        try:
            asset = self.lookup(target.key)
        except Exception:
            metrics.inc(CACHE_ERRORS, operation="get")
            metrics.inc(ASSETS_CACHED_ERRORS, **labels)
            raise
        if asset is None:
            metrics.inc(CACHE_MISSES)
            metrics.inc(ASSETS_CACHED_ERRORS, **labels)  # upstream counts a miss as an error too
        else:
            self._count_hit(asset, labels)
        return asset

    def _count_hit(self, asset: CachedAsset, labels: dict[str, str]) -> None:
        metrics = self.services.metrics
        metrics.inc(CACHE_HITS)
        metrics.inc(ASSETS_DELIVERED_CACHED, **labels)
        metrics.inc(ASSETS_CACHED_BYTES, asset.size, **labels)

    # --- building ---------------------------------------------------------------------------------

    def _ensure(self, target: Located) -> None:
        """Makes sure a build of the target is queued or running; raises the remembered failure."""
        key, profile = target.key, target.plan.profile
        builds = self.services.builds
        outcome = builds.enqueue(
            key,
            target.request.to_json(),
            kind=profile.output.kind.value,
            version=profile.version,
            arch=profile.arch,
        )
        self.services.metrics.inc(BUILD_ENQUEUE, outcome=outcome.value)
        if outcome is Enqueue.FULL:
            raise QueueFullError("the build queue is full; retry later")
        if outcome is Enqueue.FAILED:
            record = builds.get(key)
            if record is not None and record.status is Status.FAILED:
                raise BuildFailedError(record)
            return self._ensure(target)  # the failure expired between the two reads
        if outcome is Enqueue.ENQUEUED:
            self.services.publisher.publish(key, target.request)

    def _requeue_stale(self, record: BuildRecord) -> None:
        """The build's worker died (or its message was lost): queue it again, once, cluster-wide."""
        outcome = self.services.builds.enqueue(
            record.key, record.request, kind=record.kind, version=record.version, arch=record.arch
        )
        if outcome is Enqueue.ENQUEUED:
            self.services.metrics.inc(BUILD_ENQUEUE, outcome="requeued")
            log.warning("build lost its worker; queued again", extra={"key": record.key})
            self.services.publisher.publish(record.key, BuildRequest.from_json(record.request))

    def _requeue_lost(self, target: Located) -> None:
        """Redis no longer knows the build (it restarted empty, or failed over to a replica that
        had not seen it): queue it again, once, cluster-wide. A worker still building it keeps its
        lock, so the new task finds the build running and leaves it (``worker.pipeline``)."""
        log.warning("build record lost (redis restarted?); queued again", extra={"key": target.key})
        self._ensure(target)

    def _wait(
        self, keys: Sequence[str], timeout: float | None = None, targets: Mapping[str, Located] | None = None
    ) -> dict[str, CachedAsset] | Pending:
        """Blocks until the builds finish or ``build.waitTimeout`` passes; in a stopping process, 503
        when the builds did not finish within the wait's share of the grace period. Builds of
        ``targets`` whose records are lost meanwhile are queued again."""
        if not self.waiter.try_reserve(keys):
            raise UnavailableError("too many requests are waiting for builds on this server; retry later")
        metrics = self.services.metrics
        metrics.inc(CLIENTS_WAITING)
        started = time.monotonic()
        try:
            if timeout is None:
                timeout = self.services.config.build.waitTimeout.total_seconds()
            known = targets or {}

            def on_lost(key: str) -> None:
                if key in known:
                    self._requeue_lost(known[key])

            records = self.waiter.wait_all(keys, timeout, self._requeue_stale, on_lost)
        finally:
            self.waiter.release()
            metrics.inc(CLIENTS_WAITING, -1)
            metrics.observe(CLIENT_WAIT, time.monotonic() - started)
        for record in records.values():
            if record is not None and record.status is Status.FAILED:
                raise BuildFailedError(record)
        for key, record in records.items():
            if record is None or not record.finished:
                if self.waiter.shutdown.stopping:
                    raise StoppingError("this server is shutting down; the build goes on, retry")
                return Pending(key, record)
        assets: dict[str, CachedAsset] = {}
        finished = time.monotonic()  # a look-up begun before the builds were seen finished may miss them
        for key in keys:
            asset = self.lookup(key, finished)
            if asset is None:
                # Published and then gone (evicted, or its signature no longer verifies): build again.
                raise UnavailableError("the asset was built but is not in the cache; retry")
            assets[key] = asset
        return assets
