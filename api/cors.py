"""CORS exactly as upstream's rs/cors setup, as WSGI middleware so preflights never reach routing.

Preflights (OPTIONS with Access-Control-Request-Method) are always answered 204, even for unknown
paths or refused requests; only GET/HEAD/OPTIONS and the Cache-Control header are allowed, so a
browser cannot POST a schematic cross-origin (as upstream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

ALLOWED_METHODS = ("HEAD", "GET", "OPTIONS")
ALLOWED_HEADERS = ("cache-control", "origin")
EXPOSED_HEADERS = "Content-Disposition, Content-Length, Content-Type"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class OriginMatcher:
    """``*``, exact origins (case-insensitive) and one-wildcard patterns such as ``https://*.example.com``."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.exact = {o.lower() for o in allowed if "*" not in o}
        self.patterns = [tuple(o.lower().split("*", 1)) for o in allowed if "*" in o and o != "*"]

    def __call__(self, origin: str) -> bool:
        if self.any:
            return True
        origin = origin.lower()
        if origin in self.exact:
            return True
        return any(
            origin.startswith(pre) and origin.endswith(suf) and len(origin) >= len(pre) + len(suf)
            for pre, suf in self.patterns
        )


class CORSMiddleware:
    def __init__(self, app: WSGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = OriginMatcher(allowed_origins)
        self.wildcard = "*" in allowed_origins

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        origin = environ.get("HTTP_ORIGIN", "")
        if method == "OPTIONS" and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
            return self._preflight(environ, origin, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("Vary", "Origin"))
            if origin and self.allowed(origin) and method in ALLOWED_METHODS:
                headers.append(("Access-Control-Allow-Origin", "*" if self.wildcard else origin))
                headers.append(("Access-Control-Expose-Headers", EXPOSED_HEADERS))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def _preflight(
        self, environ: dict[str, Any], origin: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        headers = [("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        requested_method = environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].upper()
        requested_headers = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
        names = [h.strip().lower() for h in requested_headers.split(",") if h.strip()]
        if (
            origin
            and self.allowed(origin)
            and requested_method in ALLOWED_METHODS
            and all(n in ALLOWED_HEADERS for n in names)
        ):
            headers.append(("Access-Control-Allow-Origin", "*" if self.wildcard else origin))
            headers.append(("Access-Control-Allow-Methods", requested_method))
            if requested_headers:
                headers.append(("Access-Control-Allow-Headers", requested_headers))
        start_response("204 No Content", headers)
        return [b""]
