"""Response bodies shaped like upstream's Go encoders, so byte-comparing clients see no difference."""

from __future__ import annotations

import json

from flask import Response


def go_json(payload: object) -> bytes:
    """JSON as Go's json.Encoder writes it: compact, HTML-escaped, newline-terminated."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


def json_response(payload: object, status: int = 200) -> Response:
    """Upstream leaves these to content sniffing; we say what they are."""
    return Response(go_json(payload), status=status, mimetype="application/json")
