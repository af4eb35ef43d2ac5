"""Forwarding a registry API call to a backing registry, streamed, with bounded memory.

Upstream hands such requests to an ``httputil.ReverseProxy`` (``proxyRegistryRequest`` in
``siderolabs/image-factory:internal/frontend/http/registry.go``): same method and path on the
backing registry, no ``Host`` and no ``Authorization`` forwarded, the answer copied back as is. We do
the same with one shared ``requests.Session`` (connection pooling across requests of a process) and
a few deliberate choices:

* request headers are an allow-list (``Accept``, ``Range``, conditionals, ``User-Agent``), not a
  deny-list: a client's cookies or proxy credentials never reach the backing registry, and no
  factory credentials are ever added (``trust_env`` is off, so not even a ``.netrc`` entry). The
  one exception is an *anonymous* bearer token: registries such as ghcr.io answer every anonymous
  pull with a ``401`` naming a token service that hands out pull tokens without credentials; we
  fetch such a token (without credentials) and retry once, so an https backing registry that allows
  anonymous pulls works. A registry that really wants credentials gets a ``503``.
* bytes are copied undecoded (``Accept-Encoding: identity`` upstream, ``raw.stream`` with
  ``decode_content=False``), so ``Content-Length`` and digests hold, in chunks of ``CHUNK_SIZE``;
  the upstream connection is released when the client goes away (the WSGI server closes the
  iterable).
* redirects are not followed: a registry that sends blobs to object storage answers ``307`` and
  the client fetches from there. A relative ``Location`` is made absolute against the backing
  registry, and a ``Link`` for tag paging that points at the backing registry is rewritten to our
  own path.
* a connection failure or timeout is a registry-shaped ``503`` with ``Retry-After``
  (``api/registry/errors.py``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from flask import Request, Response
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies, parse_dict_header

from api.registry.errors import error_response

log = logging.getLogger(__name__)

#: Seconds to wait for the backing registry to accept the connection and for each read.
DEFAULT_TIMEOUT = 30.0
#: Bytes held in memory per streamed response at a time.
CHUNK_SIZE = 64 * 1024
#: What a ``503`` asks clients to wait before retrying.
RETRY_AFTER = 5
#: Tokens are refreshed this long before their ``expires_in`` runs out.
_TOKEN_MARGIN = 10.0
#: distribution's token spec: a token without ``expires_in`` lives 60 s.
_TOKEN_DEFAULT_TTL = 60.0
#: Anonymous tokens kept per process (one per realm, service and scope).
_MAX_TOKENS = 1024

#: Request headers a client may pass to the backing registry (lower case).
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "range",
        "if-range",
        "if-none-match",
        "if-match",
        "if-modified-since",
        "if-unmodified-since",
        "user-agent",
    }
)
#: Response headers copied back to the client (lower case → the spelling we send).
FORWARDED_RESPONSE_HEADERS = {
    name.lower(): name
    for name in (
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Content-Range",
        "Accept-Ranges",
        "Docker-Content-Digest",
        "Docker-Distribution-API-Version",
        "ETag",
        "Last-Modified",
        "Cache-Control",
        "Location",
        "Link",
        "OCI-Filters-Applied",
    )
}
#: RFC 9110 §7.6.1 plus the classic ones: never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_METHODS = frozenset({"GET", "HEAD"})


class UpstreamUnavailable(Exception):
    """The backing registry could not be reached (connection refused, DNS, TLS, timeout)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"registry {host} is unavailable: {reason}")
        self.host = host


# --- the scheme rule ---------------------------------------------------------------------------

#: go-containerregistry's ``reLocal``: ``*.local`` / ``*.localhost`` with an optional port.
_RE_LOCAL = re.compile(r".*\.local(?:host)?(?::\d{1,5})?$")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def registry_scheme(registry: str, insecure: bool) -> str:
    """``http`` or ``https`` for ``registry`` (``host[:port]``), exactly as go-containerregistry picks it.

    ``google/go-containerregistry:pkg/name/registry.go`` (``Registry.Scheme``), which upstream uses
    for the ``Location`` of its ``307`` redirects (``craftRedirectURL`` in
    ``siderolabs/image-factory:internal/frontend/http/registry.go``): http when insecure, for an
    RFC 1918 IPv4 address, for ``localhost:<port>``, for ``*.local``/``*.localhost``, and whenever
    the name *contains* ``127.0.0.1`` or ``::1`` (unanchored regular expressions there, so
    ``[fe80::1]`` is http too). A bare ``localhost`` without a port is https, as there.
    """
    if insecure:
        return "http"
    try:
        address = ipaddress.ip_address(registry.split(":")[0])
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv4Address) and any(address in net for net in _RFC1918):
        return "http"
    if registry.startswith("localhost:") or _RE_LOCAL.match(registry):
        return "http"
    if "127.0.0.1" in registry or "::1" in registry:
        return "http"
    return "https"


def registry_base_url(registry: str, insecure: bool) -> str:
    """``<scheme>://<registry>`` (no trailing slash), the scheme by ``registry_scheme``."""
    return f"{registry_scheme(registry, insecure)}://{registry}"


# --- header helpers (pure) ---------------------------------------------------------------------


def request_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers sent upstream for a client request's header pairs (``request.headers.items()``).

    Only ``FORWARDED_REQUEST_HEADERS``; repeated headers (several ``Accept`` lines) are joined with
    ``", "`` so every media type the client accepts is honoured. ``Accept-Encoding: identity``
    keeps the bytes (and so ``Content-Length`` and digests) as the registry stores them.
    """
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in FORWARDED_REQUEST_HEADERS and key not in HOP_BY_HOP:
            canonical = "-".join(part.capitalize() for part in key.split("-"))
            out[canonical] = f"{out[canonical]}, {value}" if canonical in out else value
    out["Accept-Encoding"] = "identity"
    return out


def _common_suffix_prefixes(upstream_path: str, client_path: str) -> tuple[str, str]:
    """The differing leading parts of two paths that end alike (segment-wise).

    ``/v2/ns/siderolabs/imager/tags/list`` vs ``/v2/siderolabs/imager/tags/list`` →
    ``("/v2/ns", "/v2")``.
    """
    up, cl = upstream_path.split("/"), client_path.split("/")
    n = 0
    while n < min(len(up), len(cl)) - 1 and up[-1 - n] == cl[-1 - n]:
        n += 1
    return "/".join(up[: len(up) - n]), "/".join(cl[: len(cl) - n])


def rewrite_link(link: str, upstream_url: str, client_path: str) -> str:
    """A ``Link`` header whose targets on the backing registry point at our own path instead.

    distribution pages ``tags/list`` with ``Link: </v2/<repo>/tags/list?last=…&n=…>; rel="next"``,
    the repository being the *backing* one (with its namespace); the client must come back to us.
    Targets on another origin, or outside the proxied path, are left alone. Our targets are
    origin-relative (clients resolve them against the URL they asked).
    """
    upstream = urlsplit(upstream_url)
    up_prefix, client_prefix = _common_suffix_prefixes(upstream.path, client_path)

    def replace(match: re.Match[str]) -> str:
        target = urlsplit(urljoin(upstream_url, match.group(1)))
        if (target.scheme, target.netloc) != (upstream.scheme, upstream.netloc):
            return match.group(0)
        if not (target.path == up_prefix or target.path.startswith(up_prefix + "/")):
            return match.group(0)
        path = client_prefix + target.path[len(up_prefix) :]
        return "<" + urlunsplit(("", "", path, target.query, target.fragment)) + ">"

    return re.sub(r"<([^>]*)>", replace, link)


def response_headers(upstream: Mapping[str, str], upstream_url: str, client_path: str) -> dict[str, str]:
    """The headers of the backing registry's answer we send back (``FORWARDED_RESPONSE_HEADERS``).

    A relative ``Location`` is made absolute against the backing registry (the client would resolve
    it against us); ``Link`` goes through ``rewrite_link``.
    """
    out: dict[str, str] = {}
    for name, value in upstream.items():
        canonical = FORWARDED_RESPONSE_HEADERS.get(name.lower())
        if canonical is None:
            continue
        if canonical == "Location":
            value = urljoin(upstream_url, value)
        elif canonical == "Link":
            value = rewrite_link(value, upstream_url, client_path)
        out[canonical] = value
    return out


def bearer_challenge(header: str) -> dict[str, str] | None:
    """``realm``/``service``/``scope`` of a ``WWW-Authenticate: Bearer …`` challenge, or None."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    values = {k.lower(): v for k, v in parse_dict_header(params).items() if v is not None}
    return values if values.get("realm") else None


# --- the HTTP side ---------------------------------------------------------------------------


def _new_session() -> requests.Session:
    session = requests.Session()
    # No proxies, CA bundles or .netrc credentials picked up implicitly: proxies and CA bundles
    # from the environment are applied per request (``_environ``), credentials never.
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=64, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_SESSION = _new_session()
_TOKENS: dict[tuple[str, str, str], tuple[float, str]] = {}
_TOKENS_LOCK = threading.Lock()


def session() -> requests.Session:
    """The process's shared session to backing registries."""
    return _SESSION


def _environ(url: str) -> dict[str, Any]:
    """Proxy and CA settings from the environment (what ``trust_env`` would give, minus .netrc)."""
    verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return {"proxies": get_environ_proxies(url), "verify": verify}


def _anonymous_token(challenge: dict[str, str], timeout: float) -> str | None:
    """A pull token from the challenge's realm, asked for without credentials; cached until expiry."""
    key = (challenge["realm"], challenge.get("service", ""), challenge.get("scope", ""))
    now = time.monotonic()
    with _TOKENS_LOCK:
        hit = _TOKENS.get(key)
    if hit and hit[0] > now:
        return hit[1]
    params = {k: v for k, v in (("service", key[1]), ("scope", key[2])) if v}
    response = _SESSION.get(key[0], params=params, timeout=timeout, **_environ(key[0]))
    with response:
        if response.status_code != 200:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        return None
    ttl = body.get("expires_in")
    ttl = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else _TOKEN_DEFAULT_TTL
    with _TOKENS_LOCK:
        if len(_TOKENS) >= _MAX_TOKENS:  # one per repository asked for: keep the cache bounded
            for stale in [k for k, (expiry, _) in _TOKENS.items() if expiry <= now] or list(_TOKENS):
                del _TOKENS[stale]
        _TOKENS[key] = (now + max(ttl - _TOKEN_MARGIN, 1.0), token)
    return token


def open_upstream(
    method: str, url: str, headers: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> requests.Response:
    """Sends one request to the backing registry; the answer is open (``stream=True``), not followed.

    Raises ``UpstreamUnavailable`` when the registry cannot be reached. A ``401`` with a bearer
    challenge is retried once with an anonymous token (see the module docstring).
    """
    host = urlsplit(url).netloc
    sent = dict(headers)
    options: dict[str, Any] = {"stream": True, "allow_redirects": False, "timeout": timeout, **_environ(url)}
    try:
        response = _SESSION.request(method, url, headers=sent, **options)
        challenge = bearer_challenge(response.headers.get("WWW-Authenticate", ""))
        if response.status_code == 401 and challenge is not None:
            token = _anonymous_token(challenge, timeout)
            if token is not None:
                response.close()
                sent["Authorization"] = f"Bearer {token}"
                response = _SESSION.request(method, url, headers=sent, **options)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise UpstreamUnavailable(host, exc.__class__.__name__) from exc
    return response


def _chunks(upstream: requests.Response, url: str, max_read_time: float | None = None) -> Iterator[bytes]:
    """The body as it arrives; the upstream connection goes back to the pool (or is dropped) at the end,
    also when the client goes away (the WSGI server closes this generator).

    ``max_read_time``: seconds after which a body still arriving (a source registry streaming for ever
    or trickling) is cut off, so it cannot hold an API thread; the client sees a short body.
    """
    deadline = None if max_read_time is None else time.monotonic() + max_read_time
    try:
        while chunk := upstream.raw.read1(CHUNK_SIZE, decode_content=False):
            yield chunk
            if deadline is not None and time.monotonic() > deadline:
                log.warning("%s was still arriving after %g s: cut off", url, max_read_time)
                return
    except Exception as exc:  # requests', urllib3's (ProtocolError, ReadTimeoutError) and OSErrors
        # Headers (with Content-Length) are already sent: the client sees a short body.
        log.warning("reading %s from the backing registry failed: %s", url, exc)
    finally:
        upstream.close()


def relay(
    request: Request, upstream: requests.Response, upstream_url: str, *, max_read_time: float | None = None
) -> Response:
    """The Flask answer for an open backing-registry answer: its status, our header selection, its body
    streamed (none for ``HEAD``).

    A ``401`` left after ``open_upstream`` means the registry wants credentials, which we never send:
    that is a ``503`` (upstream's "proxying to an authorized … registry is not possible"), not a
    challenge the client could answer (its ``Authorization`` is not forwarded).
    """
    if upstream.status_code == 401:
        upstream.close()
        host = urlsplit(upstream_url).netloc
        return error_response(
            503,
            f"registry {host} requires credentials: the factory only proxies anonymous pulls",
            retry_after=RETRY_AFTER,
        )
    if upstream.status_code >= 400 and "json" not in upstream.headers.get("Content-Type", ""):
        # e.g. distribution's plain-text 405 for HEAD on tags/list: our errors are the registry's JSON
        upstream.close()
        host = urlsplit(upstream_url).netloc
        return error_response(upstream.status_code, f"registry {host} answered {upstream.status_code}")
    headers = response_headers(upstream.headers, upstream_url, request.path)
    if request.method == "HEAD":
        upstream.close()
        body: Iterator[bytes] = iter(())
    else:
        body = _chunks(upstream, upstream_url, max_read_time)
    resp = Response(body, status=upstream.status_code, direct_passthrough=True)
    resp.headers.pop("Content-Type", None)
    for name, value in headers.items():
        resp.headers[name] = value
    resp.call_on_close(upstream.close)
    return resp


def unavailable(host: str) -> Response:
    """The ``503`` for a backing registry we cannot reach."""
    return error_response(503, f"registry {host} is unavailable", retry_after=RETRY_AFTER)


def forward(
    request: Request,
    upstream_url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_read_time: float | None = None,
) -> Response:
    """Forwards ``request`` (``GET``/``HEAD``) to ``upstream_url``, the same API call on the backing
    registry, and streams its answer back.

    The client's query string is kept unless ``upstream_url`` has one of its own (as the
    ``Director`` of upstream's ``proxyRegistryRequest`` does).
    """
    if request.method not in _METHODS:
        return error_response(405, f"method {request.method} is not supported")
    split = urlsplit(upstream_url)
    if not split.query and request.query_string:
        upstream_url = urlunsplit(split._replace(query=request.query_string.decode("latin-1")))
    try:
        headers = request_headers(request.headers.items())
        upstream = open_upstream(request.method, upstream_url, headers, timeout=timeout)
    except UpstreamUnavailable as exc:
        log.warning("%s", exc)
        return unavailable(exc.host)
    return relay(request, upstream, upstream_url, max_read_time=max_read_time)


def redirect(url: str) -> Response:
    """``307 Temporary Redirect`` to ``url`` with an empty body (the external-registry mode).

    As ``handleExternalRegistry`` in ``siderolabs/image-factory:internal/frontend/http/registry.go``:
    ``Location`` and the status, nothing else (no ``Content-Type`` for an empty body).
    """
    resp = Response(b"", status=307)
    resp.headers.pop("Content-Type", None)
    resp.headers["Location"] = url
    return resp
