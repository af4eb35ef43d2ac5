"""Registry API errors as clients expect them: ``{"errors":[{"code","message","detail"}]}``.

The codes are the distribution spec's (``opencontainers/distribution-spec@v1.1.0:spec.md``,
"Error Codes") plus distribution's ``UNAVAILABLE``/``UNKNOWN``, so skopeo, podman, containerd and
talosctl print a useful message. Upstream answers plain text under ``/v2`` (README, deliberate
differences).
"""

from __future__ import annotations

from flask import Response

from api.errors import log_failure
from api.responses import go_json
from common.errors import FactoryError, RegistryAPIError

#: Codes by status when the error itself does not name one.
_BY_STATUS = {
    400: "NAME_INVALID",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "MANIFEST_UNKNOWN",
    405: "UNSUPPORTED",
    429: "TOOMANYREQUESTS",
    501: "UNSUPPORTED",
    503: "UNAVAILABLE",
}


#: Raised by the frontend's own checks; common code raises the same class.
RegistryError = RegistryAPIError


def error_response(
    status: int, message: str, code: str | None = None, *, retry_after: int | None = None
) -> Response:
    code = code or _BY_STATUS.get(status, "UNKNOWN")
    body = go_json({"errors": [{"code": code, "message": message, "detail": None}]})
    resp = Response(body, status=status, mimetype="application/json")
    resp.headers["Docker-Distribution-API-Version"] = "registry/2.0"
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def factory_error_response(exc: FactoryError) -> Response:
    if exc.status >= 500:
        log_failure(exc, exc.status)
    message = exc.message if exc.status != 500 else "internal server error"
    retry = int(getattr(exc, "retry_after", 5)) if exc.status == 503 else None
    return error_response(exc.status, message, getattr(exc, "code", None), retry_after=retry)
