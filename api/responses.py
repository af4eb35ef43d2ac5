"""Response bodies shaped like upstream's Go encoders, so byte-comparing clients see no difference."""

from __future__ import annotations

from flask import Response

from common.gojson import encode as go_json

__all__ = ["go_json", "json_response"]


def json_response(payload: object, status: int = 200) -> Response:
    """Upstream leaves these to content sniffing; we say what they are."""
    return Response(go_json(payload), status=status, mimetype="application/json")
