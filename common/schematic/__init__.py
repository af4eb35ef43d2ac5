"""Schematics: the model, the Go-compatible decoder and the canonical (ID-defining) YAML emitter."""

from __future__ import annotations

import hashlib

from common.schematic.decode import SchematicDecodeError, parse_schematic
from common.schematic.emit import marshal, marshal_value, schematic_id
from common.schematic.model import Customization, GoTime, MetaValue, Overlay, Schematic, SecureBoot

__all__ = [
    "Customization",
    "GoTime",
    "MetaValue",
    "Overlay",
    "Schematic",
    "SchematicDecodeError",
    "SecureBoot",
    "canonicalize",
    "marshal",
    "marshal_value",
    "parse_schematic",
    "schematic_id",
]


def canonicalize(data: bytes) -> tuple[str, bytes]:
    """Decode a request body into (schematic ID, canonical YAML bytes): what ``POST /schematics`` stores.

    Raises :class:`SchematicDecodeError` (HTTP 400) for anything upstream would refuse.
    """
    canonical = marshal(parse_schematic(data))
    return hashlib.sha256(canonical).hexdigest(), canonical
