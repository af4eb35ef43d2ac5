"""JSON as Go's ``encoding/json`` writes it, for bytes that must match what upstream serves.

Digests of image configs and manifests, and API bodies clients compare, depend on the exact bytes.
Python's :func:`json.dumps` differs from Go's ``json.Marshal`` in ways that matter here:

* Go escapes ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` (HTML safety) and the
  line/paragraph separators U+2028/U+2029 as ``\\u2028``/``\\u2029`` (JavaScript safety);
* Go writes other non-ASCII text as raw UTF-8 (``ensure_ascii=False``) and no spaces (compact);
* Go refuses NaN and infinities (``json: unsupported value``) instead of writing ``NaN``;
* ``json.Encoder.Encode`` (what HTTP handlers use) ends the document with a newline, ``Marshal`` not.

Key order is the caller's: pass dicts in Go struct field order, with map keys already sorted.
"""

from __future__ import annotations

import json

__all__ = ["encode", "marshal"]

#: What Go escapes beyond JSON's minimum; these characters only occur inside strings, so a plain
#: replace over the dumped text is exact.
_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def marshal(value: object) -> bytes:
    """``json.Marshal(value)``: compact, HTML-escaped, no trailing newline; NaN is an error."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text.encode()


def encode(value: object) -> bytes:
    """``json.NewEncoder(w).Encode(value)``: :func:`marshal` followed by a newline."""
    return marshal(value) + b"\n"
