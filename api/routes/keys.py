"""``GET /oci/cosign/signing-key.pub``: the key that verifies cached assets (and installer images)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.context import services

bp = Blueprint("keys", __name__)


@bp.get("/oci/cosign/signing-key.pub")
def cosign_signing_key() -> Response:
    return Response(services().cache_signer.public_key_pem(), status=200, mimetype="application/x-pem-file")
