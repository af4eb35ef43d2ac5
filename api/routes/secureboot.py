"""``GET /secureboot/signing-cert.pem``: the certificate Secure Boot assets are signed with.

Upstream ``siderolabs/image-factory:internal/frontend/http/secureboot.go``
(``handleSecureBootSigningCert``): the PEM certificate as ``application/x-pem-file``. When Secure Boot
is disabled upstream's ``ErrDisabled`` reaches the handler untagged, so it answers 500; so does this.
The API refused to start if the certificate could not be read; it is re-read per request (a small
file), so a rotated certificate is served without a restart.
"""

from __future__ import annotations

from flask import Blueprint, Response

from api.context import services
from common.profile.secureboot import signing_certificate_pem

bp = Blueprint("secureboot", __name__)


@bp.get("/secureboot/signing-cert.pem")
def signing_cert() -> Response:
    return Response(
        signing_certificate_pem(services().config.secureBoot), status=200, mimetype="application/x-pem-file"
    )
