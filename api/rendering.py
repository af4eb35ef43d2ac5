"""HTTP answers for the delivery use case (``common.delivery``): redirects, streamed bytes with
ranges, ``202 Accepted`` and the build status document. Routes stay thin by sharing these."""

from __future__ import annotations

import base64
import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Request, Response
from werkzeug.http import http_date, is_resource_modified, parse_if_range_header
from werkzeug.urls import iri_to_uri

from api.responses import go_json
from common.builds.state import Status
from common.cache.base import CachedAsset
from common.delivery.progress import Progress
from common.delivery.service import Delivery, Pending
from common.disposition import content_disposition
from common.services import Services

log = logging.getLogger(__name__)


def progress_document(progress: Progress, url: str | None) -> dict[str, Any]:
    """The ``/builds/<key>`` body (ours; upstream has no build status)."""
    return {
        "status": progress.status.value,
        "queuePosition": progress.queue_position,
        "stage": progress.stage,
        "progress": progress.progress,
        "etaSeconds": None if progress.eta_seconds is None else math.ceil(progress.eta_seconds),
        "startedAt": _iso(progress.started_at),
        "finishedAt": _iso(progress.finished_at),
        "error": progress.error or None,
        "url": url if progress.status is not Status.FAILED else None,
    }


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def retry_after(eta: float | None) -> str:
    return str(int(min(30, max(2, (eta or 10) / 4))))


def pending_response(d: Delivery, pending: Pending, url: str, *, preference_applied: bool) -> Response:
    """``202 Accepted``: the build's status now, where to poll, and when. Only for a client that
    asked with ``Prefer: respond-async``: a plain request never gets a 202 (``api.routes.image``)."""
    progress = d.progress_of(pending.record) if pending.record is not None else Progress.queued()
    resp = Response(go_json(progress_document(progress, url)), status=202, mimetype="application/json")
    resp.headers["Location"] = f"/builds/{pending.key}"
    resp.headers["Retry-After"] = retry_after(d.eta(pending.record))
    if preference_applied:
        resp.headers["Preference-Applied"] = "respond-async"
    return resp


def wants_async(request: Request) -> bool:
    """RFC 7240 ``Prefer: respond-async``."""
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def redirect_allowed(request: Request, services: Services) -> bool:
    """HEAD never; PXE clients (:func:`pxe_client`) only when ``cache.redirectPXE`` says so."""
    if request.method == "HEAD":
        return False
    return services.config.cache.redirectPXE or not pxe_client(
        request.headers.get("User-Agent", ""), lambda: request.host, services
    )


def pxe_client(user_agent: str, host: Callable[[], str], services: Services) -> bool:
    """iPXE itself, or a request on the ``http.externalPXEURL`` host (``host`` gives the request's).

    Upstream's rule (``siderolabs/image-factory:internal/frontend/http/image.go``), except that
    upstream compares against externalURL's host when externalPXEURL is unset, which turns redirects
    off for everybody on a one-host deployment (README, "Where we deliberately differ"); we only do
    that when a distinct PXE host is configured.
    """
    if user_agent.startswith("iPXE/"):
        return True
    http = services.config.http
    pxe_host, main_host = _hosts(http.externalPXEURL, http.externalURL)
    return bool(pxe_host and pxe_host != main_host and host() == pxe_host)


@functools.lru_cache(maxsize=8)  # the configuration's two URLs: parsed once, not per request
def _hosts(pxe_url: str, main_url: str) -> tuple[str, str]:
    return (urlsplit(pxe_url).netloc if pxe_url else ""), urlsplit(main_url).netloc


#: Most digits a range position is read with: more than any asset's size, and ``int()`` of thousands
#: of digits is slow (Python refuses past 4300), so longer numbers count as "beyond the end".
_DIGITS = 18
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_BEYOND = 10**_DIGITS


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _DIGITS else _BEYOND


def _magnitude(digits: str) -> tuple[int, str]:
    """Orders decimal numbers of any length without converting them."""
    digits = digits.lstrip("0")
    return len(digits), digits


def parse_range(header: str | None, size: int, max_ranges: int = 16) -> tuple[int, int] | bool | None:
    """The one byte range to send of ``size`` bytes: ``(start, length)`` (206), None to send the
    whole asset (200), False for 416 (``Content-Range: bytes */size``).

    RFC 9110 §14.2 lets a server ignore a Range header or answer its satisfiable ranges; this one
    never builds a multipart response, so no answer is ever larger than the asset:

    - no header, a unit other than ``bytes``, or any malformed range-spec (``5-1``, ``-``, ``x-y``):
      the header is ignored (200, the whole asset);
    - more than ``max_ranges`` range-specs (``http.maxRanges``): 416, counted before any number is
      read (§15.5.17: "an excessive number of small or overlapping ranges");
    - no range satisfiable: 416;
    - the satisfiable ranges merged (overlapping or adjacent ones become one): one range left → 206
      with it; several apart → 200 with the whole asset;
    - huge positions are clamped to the end (``bytes=0-99999999999999999999`` is the whole asset).
    """
    if not header:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in specs.split(",")]
    parts = [part for part in parts if part]  # RFC 9110 §5.6.1: empty list elements do not count
    if not parts:
        return None
    if len(parts) > max_ranges:
        return False
    wanted: list[tuple[int, int]] = []  # satisfiable (first, last), inclusive
    for part in parts:
        match = _SPEC.fullmatch(part)
        if match is None or match.group() == "-":
            return None
        first, last = match.groups()
        if not first:
            length = min(_position(last), size)
            if length > 0:
                wanted.append((size - length, size - 1))
            continue
        start = _position(first)
        if last and _magnitude(last) < _magnitude(first):
            return None
        if start < size:
            wanted.append((start, min(_position(last), size - 1) if last else size - 1))
    if not wanted:
        return False
    wanted.sort()
    start, end = wanted[0]
    for first, last in wanted[1:]:
        if first > end + 1:
            return None  # ranges apart: the whole asset, never multipart
        end = max(end, last)
    return start, end - start + 1


#: ``max-age`` of a streamed asset. The bytes behind a key never change, but the key behind an asset
#: URL does when the release is rebuilt for an errata (new imager or extension digests): an hour bounds
#: how long a CDN or proxy serves the old build after one, and past it a revalidation costs a 304.
ASSET_MAX_AGE = 3600
#: Seconds a client must still have to start a download after a cache handed it a stored redirect.
REDIRECT_MARGIN = 300


def redirect_cache_control(valid_for: float) -> str:
    """A redirect may be reused until shortly before its presigned URL expires, never longer than an
    asset (:data:`ASSET_MAX_AGE`); a URL about to expire must not be stored at all."""
    max_age = int(min(ASSET_MAX_AGE, valid_for - REDIRECT_MARGIN))
    return f"public, max-age={max_age}" if max_age > 0 else "no-store"


def redirect_answer(
    url: str, valid_for: float, *, vary_user_agent: bool
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a 302 to an asset's S3 or CDN ``url`` (:func:`asset_response`, and
    ``api.cached_redirects`` without Flask: one answer, whichever sends it).

    ``Location`` is what Werkzeug would send (its IRI-to-URI conversion, remembered per URL: presigned
    URLs are remembered for minutes by ``common.delivery``). ``Vary: User-Agent`` when PXE clients are
    not redirected: a stored redirect must not reach iPXE, which gets the bytes.
    """
    body = f'<a href="{_html_escape(url)}">Found</a>.\n\n'.encode()
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Location", _uri(url)),
        ("Cache-Control", redirect_cache_control(valid_for)),
    ]
    if vary_user_agent:
        headers.append(("Vary", "User-Agent"))
    return body, headers


_uri = functools.lru_cache(maxsize=1024)(iri_to_uri)


def _repr_digest(asset: CachedAsset) -> str | None:
    """RFC 9530 ``Repr-Digest`` from the asset's sha256, when the cache knows it."""
    digest = getattr(asset, "digest", None)
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    try:
        raw = bytes.fromhex(digest.removeprefix("sha256:"))
    except ValueError:
        return None
    return f"sha-256=:{base64.b64encode(raw).decode()}:"


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

    What a CDN or caching proxy needs to reuse answers (ours; upstream sends none of it):

    - ``ETag`` is the profile hash: one key names one published entry, so it is a strong validator;
      ``Last-Modified`` is the S3 object's (OCI-only caches do not know one); ``Repr-Digest`` the
      bytes' sha256. ``If-None-Match``/``If-Modified-Since`` get 304 (werkzeug's
      ``is_resource_modified``, RFC 9110 §13.2.2 order), and an ``If-Range`` that does not match
      turns a range request into the whole asset.
    - ``Cache-Control: public, max-age=`` :data:`ASSET_MAX_AGE` on bytes; on a redirect, a
      ``max-age`` that ends :data:`REDIRECT_MARGIN` seconds before the presigned URL does, and
      ``Vary: User-Agent`` unless PXE clients are redirected too (iPXE gets the bytes instead).
    """
    if redirect_allowed(request, d.services):
        try:
            found = d.redirect(key, asset, filename)
        except Exception as exc:
            log.warning("asset cannot be redirected; serving directly", extra={"error": str(exc)})
            found = None
        if found is not None:
            vary_user_agent = not d.services.config.cache.redirectPXE
            body, redirect_headers = redirect_answer(*found, vary_user_agent=vary_user_agent)
            return Response(body, status=302, headers=redirect_headers)
    etag = f'"{key}"'
    modified = getattr(asset, "modified", None)
    validators = {"ETag": etag, "Cache-Control": f"public, max-age={ASSET_MAX_AGE}"}
    if isinstance(modified, datetime):
        validators["Last-Modified"] = http_date(modified)
    else:
        modified = None
    if not is_resource_modified(request.environ, etag=key, last_modified=modified, ignore_if_range=True):
        return Response([], status=304, headers=validators)
    headers = {
        "Content-Disposition": content_disposition(filename),
        "Accept-Ranges": "bytes",
        **validators,
    }
    if digest := _repr_digest(asset):
        headers["Repr-Digest"] = digest
    size = asset.size
    range_header = request.headers.get("Range")
    if range_header and not _if_range_holds(request.headers.get("If-Range"), key, modified):
        range_header = None  # RFC 9110 §13.1.5: the representation changed, send all of it
    wanted = parse_range(range_header, size, d.services.config.http.maxRanges)
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
    return Response(
        Primed(asset.read(start, length)),
        status=status,
        headers=headers,
        content_type=content_type,
        direct_passthrough=True,
    )


def _if_range_holds(header: str | None, key: str, modified: datetime | None) -> bool:
    """True without ``If-Range``, or when it names this asset: its strong ETag, or exactly its
    ``Last-Modified`` (RFC 9110 §13.1.5; a weak ETag never matches)."""
    if not header:
        return True
    condition = parse_if_range_header(header)
    if condition.etag is not None:
        return header.strip() == f'"{key}"'
    if condition.date is not None and modified is not None:
        return modified.replace(microsecond=0) == condition.date
    return False


class Primed(Iterator[bytes]):
    """``chunks`` with its first chunk read now, inside the request handler.

    A backend that cannot be reached fails on the first read. Read lazily by the WSGI server, that
    would be after the handler returned, where gunicorn can only answer its own HTML 500; read here,
    it is the handler's error: 503 with ``Retry-After`` for an unreachable registry or S3. Closing
    closes ``chunks`` (the backend connection), as the server does when a client goes away.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._first: bytes | None = next(chunks, None)

    def __next__(self) -> bytes:
        first, self._first = self._first, None
        if first is not None:
            return first
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _html_escape(text: str) -> str:
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;")):
        text = text.replace(char, entity)
    return text
