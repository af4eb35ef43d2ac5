"""Cached-asset redirects answered without Flask, when this process remembers all they need.

Most of a busy factory's traffic is machines downloading assets that are already cached: a 302 to S3
or a CDN. Through Flask (request context, URL routing, a ``Response`` and its header fix-ups) such a
redirect cost more than the delivery use case it serves, and kept the API under 0.8x the throughput
of a bare Flask ``redirect()`` (issue 18; ``python -m bench.delivery``, figures in the README).

:class:`CachedRedirects` sits between ``api.middleware`` (request id, ``Server``, access line and
HTTP metrics: all unchanged) and Flask. It answers ``GET /image/<schematic>/<version>/<path>`` itself
only when all of this holds, and passes everything else to Flask untouched:

* no query string (``?filename=``), path segments of plain printable ASCII, not a checksum or bundle
  path (``.sha256``, ``.sha512``, ``.sigstore.json``);
* the delivery use case still remembers the request's plan and its verified cache entry
  (:meth:`common.delivery.service.Delivery.remembered`: nothing is looked up or built here), and the
  cache offers a redirect for it (:meth:`~common.delivery.service.Delivery.redirect`);
* the client may be redirected: not a PXE client, unless ``cache.redirectPXE``
  (:func:`api.rendering.pxe_client`).

The answer is the one the image route gives (:func:`api.rendering.redirect_answer`), recorded as it
records it: the route's ``handler`` label, upstream's extension and cached-asset counters and the
build key in the log line (:meth:`~common.delivery.service.Delivery.delivered`). An error on the way
sends the request to Flask, which answers it as it always has. The first request for an asset always
goes through Flask: that is what makes it remembered. ``tests/integration/test_cached_redirects.py``
compares the two answers and their metrics.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.wsgi import get_host

from api.metrics import HttpMetrics
from api.middleware import observed
from api.rendering import pxe_client, redirect_answer
from common.delivery.service import Delivery

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: ``/image/<schematic_id>/<version>/<path>`` with segments Werkzeug's default converter would pass
#: through unchanged (printable ASCII, no ``/``), so the memo keys are the route's own arguments.
_IMAGE = re.compile(r"/image/([!-.0-~]+)/([!-.0-~]+)/([!-.0-~]+)")
#: Paths the image route answers from the asset's entry but not with the asset (``api.routes.image``).
_NOT_ASSETS = (".sha256", ".sha512", ".sigstore.json")
#: Werkzeug's status line for a 302, as Flask would send it.
_FOUND = f"302 {HTTPStatus.FOUND.phrase.upper()}"


class CachedRedirects:
    """WSGI: ``GET /image/…`` for a remembered cached asset answered with its redirect; all else to ``app``.

    ``label`` is the image route's ``handler`` label (``api.metrics.route_pattern``).
    """

    def __init__(self, app: WSGIApp, delivery: Delivery, label: str, metrics: HttpMetrics | None) -> None:
        self.app = app
        self.delivery = delivery
        self.label = label
        self.metrics = metrics
        self.redirect_pxe = delivery.services.config.cache.redirectPXE

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        answer = self._answer(environ) if environ.get("REQUEST_METHOD") == "GET" else None
        if answer is None:
            return self.app(environ, start_response)
        body, headers = answer
        state = observed(environ)
        if state is not None:
            state.label = self.label
            if self.metrics is not None:
                self.metrics.entered(self.label)
        start_response(_FOUND, headers)
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[bytes, list[tuple[str, str]]] | None:
        """The redirect's body and headers, or None when Flask must answer."""
        if environ.get("QUERY_STRING"):
            return None
        match = _IMAGE.fullmatch(environ.get("PATH_INFO", ""))
        if match is None:
            return None
        schematic_id, version, path = match.groups()
        if path.endswith(_NOT_ASSETS):
            return None
        d = self.delivery
        remembered = d.remembered(schematic_id, version, path)
        if remembered is None:
            return None
        located, asset = remembered
        try:
            if not self.redirect_pxe and pxe_client(
                environ.get("HTTP_USER_AGENT", ""), lambda: get_host(environ), d.services
            ):
                return None
            found = d.redirect(located.key, asset, path)
        except Exception as exc:  # a bad Host header, presigning: the image route answers (and logs) it
            log.debug("cached redirect left to the image route", extra={"error": str(exc)})
            return None
        if found is None:  # the cache has no redirect for it (registry only): streamed by the route
            return None
        d.delivered(located, asset)
        return redirect_answer(*found, vary_user_agent=not self.redirect_pxe)
