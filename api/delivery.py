"""From a resolved request to an asset: cache lookup, enqueue-or-join, waiting, and the answer.

The API never builds. On a miss it records the build in Redis and publishes the Celery task under
the profile hash (joining the one in flight, cluster-wide), then either waits for it, bounded by
``build.waitTimeout``, or answers ``202`` at once when the client asked with ``Prefer: respond-async``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache
from celery import Celery
from flask import Request, Response, current_app, request

from api.responses import go_json
from common.builds.plan import BuildRequest, resolve
from common.builds.queue import BUILD_QUEUE, BUILD_TASK, broker_settings
from common.builds.state import BuildRecord, Enqueue, Status
from common.builds.waiter import Waiter
from common.cache.base import CachedAsset
from common.errors import FactoryError, UnavailableError
from common.logging import request_id_var
from common.profile.enhance import BuildPlan
from common.services import Services

log = logging.getLogger(__name__)

MEMO_SIZE = 10_000
ENTRY_TTL = 30.0  # seconds a verified cache entry is served without asking the registry again
PLAN_TTL = 60.0  # seconds a resolved (schematic, version, path) is reused (catalogs change rarely)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class QueueFullError(UnavailableError):
    retry_after = 30


class BuildFailedError(FactoryError):
    def __init__(self, record: BuildRecord) -> None:
        super().__init__(record.error or "internal server error")
        self.status = record.error_status or 500


@dataclass(frozen=True)
class Resolved:
    request: BuildRequest
    plan: BuildPlan
    key: str


@dataclass
class Pending:
    """A build the client did not (or could no longer) wait for."""

    key: str
    record: BuildRecord | None


class Delivery:
    """Also this process's short memory of hot paths: a cached download costs four registry round
    trips and an S3 HEAD to look up and verify, ~50 times a bare redirect (bench.delivery). Only what
    cannot go wrong silently is remembered: resolved requests and verified entries for seconds,
    presigned URLs for a quarter of their validity. Misses and errors are never remembered."""

    def __init__(self, services: Services, celery: Celery, waiter: Waiter) -> None:
        self.services = services
        self.celery = celery
        self.waiter = waiter
        presign = services.config.cache.s3.presignedURLTTL.total_seconds()
        self._lock = threading.Lock()
        self._assets: TTLCache[str, CachedAsset] = TTLCache(MEMO_SIZE, ENTRY_TTL)
        self._plans: TTLCache[tuple[str, str, str], Resolved] = TTLCache(MEMO_SIZE, PLAN_TTL)
        self._urls: TTLCache[tuple[str, str], str] = TTLCache(MEMO_SIZE, max(1.0, min(300.0, presign / 4)))

    def resolve(self, schematic_id: str, version: str, path: str) -> Resolved:
        memo = (schematic_id, version, path)
        with self._lock:
            found = self._plans.get(memo)
        if found is not None:
            return found
        svc = self.services
        request, plan = resolve(svc.schematics, svc.artifacts, schematic_id, version, path)
        resolved = Resolved(request, plan, plan.key)  # the hash is the costly part: once
        with self._lock:
            self._plans[memo] = resolved
        return resolved

    def lookup(self, key: str) -> CachedAsset | None:
        with self._lock:
            found = self._assets.get(key)
        if found is not None:
            return found
        asset = self.services.cache.get(key)
        if asset is not None:
            with self._lock:
                self._assets[key] = asset
        return asset

    def redirect_url(self, key: str, asset: CachedAsset, filename: str) -> str | None:
        memo = (key, filename)
        with self._lock:
            found = self._urls.get(memo)
        if found is not None:
            return found
        url = asset.redirect_url(filename)
        if url:
            with self._lock:
                self._urls[memo] = url
        return url

    def ensure(self, key: str, request: BuildRequest, plan: BuildPlan) -> None:
        """Makes sure a build of ``key`` is queued or running; raises the remembered failure."""
        profile = plan.profile
        outcome = self.services.builds.enqueue(
            key, request.to_json(), kind=profile.output.kind.value, version=profile.version, arch=profile.arch
        )
        if outcome is Enqueue.FULL:
            raise QueueFullError("the build queue is full; retry later")
        if outcome is Enqueue.FAILED:
            record = self.services.builds.get(key)
            if record is not None and record.status is Status.FAILED:
                raise BuildFailedError(record)
            return self.ensure(key, request, plan)  # the failure expired between the two reads
        if outcome is Enqueue.ENQUEUED:
            self.publish(key, request)

    def publish(self, key: str, request: BuildRequest) -> None:
        rid = request_id_var.get()
        self.celery.send_task(
            BUILD_TASK,
            args=[request.to_json()],
            task_id=key,
            queue=BUILD_QUEUE,
            headers={"request_id": rid} if rid else None,
        )
        log.info("build queued", extra={"key": key, "path": request.path, "version": request.version})

    def requeue_stale(self, record: BuildRecord) -> None:
        """The build's worker died (or its message was lost): queue it again, once, cluster-wide."""
        request = BuildRequest.from_json(record.request)
        outcome = self.services.builds.enqueue(
            record.key, record.request, kind=record.kind, version=record.version, arch=record.arch
        )
        if outcome is Enqueue.ENQUEUED:
            log.warning("build lost its worker; queued again", extra={"key": record.key})
            self.publish(record.key, request)

    def wait(self, key: str) -> CachedAsset | Pending:
        """Blocks until the build finishes or ``build.waitTimeout`` passes."""
        if not self.waiter.try_reserve():
            raise UnavailableError("too many requests are waiting for builds on this server; retry later")
        try:
            timeout = self.services.config.build.waitTimeout.total_seconds()
            record = self.waiter.wait(key, timeout, self.requeue_stale)
        finally:
            self.waiter.release()
        if record is None or not record.finished:
            return Pending(key, record)
        if record.status is Status.FAILED:
            raise BuildFailedError(record)
        asset = self.lookup(key)
        if asset is None:
            # Published and then gone (evicted, or its signature no longer verifies): build again.
            raise UnavailableError("the asset was built but is not in the cache; retry")
        return asset

    def eta(self, record: BuildRecord | None) -> float | None:
        if record is None or record.finished:
            return None
        typical = self.services.builds.typical_seconds(record.version, record.kind, record.arch)
        if typical is None:
            return None
        if record.status is Status.RUNNING and record.started_at:
            return max(1.0, typical - (time.time() - record.started_at))
        position = self.services.builds.queue_position(record.key) or 1
        slots = max(1, self.services.config.build.maxConcurrency)
        return typical * (1 + (position - 1) // slots) + typical


def status_document(
    delivery: Delivery, key: str, record: BuildRecord | None, url: str | None
) -> dict[str, Any]:
    """The ``/builds/<key>`` body (ours; upstream has no build status)."""
    state = delivery.services.builds
    if record is None:
        return {
            "status": Status.SUCCEEDED.value,
            "queuePosition": None,
            "stage": "done",
            "progress": 1.0,
            "etaSeconds": None,
            "startedAt": None,
            "finishedAt": None,
            "error": None,
            "url": url,
        }
    eta = delivery.eta(record)
    progress = _progress(record, eta)
    return {
        "status": record.status.value,
        "queuePosition": state.queue_position(key) if record.status is not Status.SUCCEEDED else None,
        "stage": record.stage,
        "progress": progress,
        "etaSeconds": None if eta is None else math.ceil(eta),
        "startedAt": _iso(record.started_at),
        "finishedAt": _iso(record.finished_at),
        "error": record.error or None,
        "url": url if record.status is not Status.FAILED else None,
    }


def _progress(record: BuildRecord, eta: float | None) -> float:
    if record.status is Status.SUCCEEDED:
        return 1.0
    if record.status is not Status.RUNNING:
        return 0.0
    if record.stage == "signing and uploading":
        return 0.9
    if record.stage == "building" and record.started_at:
        if eta is None:
            return 0.1
        elapsed = time.time() - record.started_at
        return round(min(0.85, 0.05 + 0.8 * elapsed / max(1.0, elapsed + eta)), 2)
    return 0.05


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def retry_after(eta: float | None) -> str:
    return str(int(min(30, max(2, (eta or 10) / 4))))


def redirect_allowed(request: Request, services: Services) -> bool:
    """HEAD never; PXE clients only when ``cache.redirectPXE`` says so.

    A PXE client is a request on the ``http.externalPXEURL`` host (upstream's rule) or iPXE itself.
    Upstream compares against externalURL's host when externalPXEURL is unset, which turns redirects
    off for everybody on a one-host deployment (behaviour brief, Gotcha 1); we only do that when a
    distinct PXE host is configured.
    """
    if request.method == "HEAD":
        return False
    http = services.config.http
    pxe_host = urlsplit(http.externalPXEURL).netloc if http.externalPXEURL else ""
    main_host = urlsplit(http.externalURL).netloc
    pxe_client = request.headers.get("User-Agent", "").startswith("iPXE/") or bool(
        pxe_host and pxe_host != main_host and request.host == pxe_host
    )
    return not pxe_client or services.config.cache.redirectPXE


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """``(start, length)`` for one satisfiable byte range; None without a (usable) Range header;
    False when unsatisfiable (416). Multiple ranges are served whole, which RFC 9110 allows."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = min(int(last), size)
        if length == 0:
            return False
        return size - length, length
    start = int(first)
    if start >= size:
        return False
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return start, end - start + 1


def asset_response(
    d: Delivery,
    asset: CachedAsset,
    request: Request,
    *,
    key: str,
    filename: str,
    content_type: str,
) -> Response:
    """302 to S3/CDN when allowed, else the bytes (one range at most) in bounded chunks.

    ``ETag`` is the profile hash: the same key always names the same bytes (ours; upstream sends none).
    """
    if redirect_allowed(request, d.services):
        try:
            url = d.redirect_url(key, asset, filename)
        except Exception as exc:
            log.warning("asset cannot be redirected; serving directly", extra={"error": str(exc)})
            url = None
        if url:
            body = f'<a href="{_html_escape(url)}">Found</a>.\n\n'
            resp = Response(body, status=302, mimetype="text/html")
            resp.headers["Location"] = url
            return resp
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Accept-Ranges": "bytes",
        "ETag": f'"{key}"',
    }
    size = asset.size
    wanted = parse_range(request.headers.get("Range"), size)
    if wanted is False:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(b"", status=416, headers=headers, content_type=content_type)
    status, start, length = 200, 0, size
    if isinstance(wanted, tuple):
        start, length = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":  # an iterable, not bytes, so Werkzeug keeps our Content-Length
        return Response([], status=status, headers=headers, content_type=content_type)
    resp = Response(
        asset.read(start, length),
        status=status,
        headers=headers,
        content_type=content_type,
        direct_passthrough=True,
    )
    return resp


def _html_escape(text: str) -> str:
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;")):
        text = text.replace(char, entity)
    return text


def celery_client(services: Services) -> Celery:
    """Publishes tasks by name; the API never imports the worker's code."""
    app = Celery("image-factory-api", set_as_current=False)
    app.conf.update(broker_settings(services.config))
    return app


def delivery() -> Delivery:
    found: Delivery = current_app.extensions["delivery"]
    return found


def pending_response(d: Delivery, pending: Pending, *, preference_applied: bool) -> Response:
    """``202 Accepted``: the build's status now, where to poll, and when."""
    url = request.base_url
    doc = status_document(d, pending.key, pending.record, url)
    if pending.record is None:
        doc.update(status=Status.QUEUED.value, stage="queued", progress=0.0, url=url)
    resp = Response(go_json(doc), status=202, mimetype="application/json")
    resp.headers["Location"] = f"/builds/{pending.key}"
    resp.headers["Retry-After"] = retry_after(d.eta(pending.record))
    if preference_applied:
        resp.headers["Preference-Applied"] = "respond-async"
    return resp
