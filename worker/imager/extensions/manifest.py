"""``manifest.yaml`` of a system extension, read the way go-yaml fills upstream's ``extensions.Manifest``.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/extensions/extensions.go`` (``Manifest``).
Every scalar is taken as written (go-yaml decodes into ``string`` fields): ``1.10`` stays ``1.10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from common.errors import InvalidInputError
from common.schematic.emit import Struct

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_SIZE",
    "ROOTFS",
    "ExtensionError",
    "Metadata",
    "parse_manifest",
]

MANIFEST = "manifest.yaml"
ROOTFS = "rootfs"
MANIFEST_VERSION = "v1alpha1"
#: manifests are a few KiB (the schematic's carries the schematic, itself capped far below this).
MAX_MANIFEST_SIZE = 4 << 20


class ExtensionError(InvalidInputError):
    """An extension cannot be used: bad layout or manifest, or not made for this Talos/kernel."""


@dataclass(frozen=True)
class Metadata:
    """``extensions.Metadata``: what ``extensions.yaml`` and ``talosctl get extensions`` show."""

    name: str = ""
    version: str = ""
    author: str = ""
    description: str = ""
    compatibility: str = ""  # compatibility.talos.version
    extra_info: str = ""

    def to_struct(self) -> Struct:
        """Go field order; ``extraInfo`` is ``omitempty``."""
        fields: list[tuple[str, Any]] = [
            ("name", self.name),
            ("version", self.version),
            ("author", self.author),
            ("description", self.description),
            ("compatibility", Struct((("talos", Struct((("version", self.compatibility),))),))),
        ]
        if self.extra_info:
            fields.append(("extraInfo", self.extra_info))
        return Struct(tuple(fields))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "author": self.author,
            "description": self.description,
            "compatibility": {"talos": {"version": self.compatibility}},
        }
        if self.extra_info:
            out["extraInfo"] = self.extra_info
        return out


_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


def _string(node: yaml.Node | None, what: str) -> str:
    """go-yaml into a ``string`` field: any scalar's text as written, null is empty."""
    if node is None:
        return ""
    if not isinstance(node, yaml.ScalarNode):
        kind = "!!map" if isinstance(node, yaml.MappingNode) else "!!seq"
        raise ValueError(f"cannot unmarshal {kind} into string ({what})")
    if node.style is None and node.value in _NULLS and node.tag != "tag:yaml.org,2002:str":
        return ""
    return str(node.value)


def _fields(node: yaml.Node | None, what: str) -> dict[str, yaml.Node]:
    """A struct-typed node: keys to value nodes (unknown keys are ignored later, as go-yaml does)."""
    if node is None or (isinstance(node, yaml.ScalarNode) and node.style is None and node.value in _NULLS):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"cannot unmarshal into a struct ({what})")
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = _string(key, what)
        if name in out:
            raise ValueError(f'mapping key "{name}" already defined ({what})')
        out[name] = value
    return out


def parse_manifest(data: bytes) -> tuple[str, Metadata]:
    """``manifest.yaml`` → (manifest version, metadata); scalars typed as go-yaml decodes strings."""
    try:
        text = data.decode("utf-8")
        docs = yaml.compose_all(text, Loader=yaml.SafeLoader)
        root = next(iter(docs), None)
        if root is None:
            raise ValueError("EOF")
        top = _fields(root, "manifest")
        meta = _fields(top.get("metadata"), "metadata")
        compat = _fields(_fields(meta.get("compatibility"), "compatibility").get("talos"), "talos")
        version = _string(top.get("version"), "version")
        metadata = Metadata(
            name=_string(meta.get("name"), "name"),
            version=_string(meta.get("version"), "version"),
            author=_string(meta.get("author"), "author"),
            description=_string(meta.get("description"), "description"),
            compatibility=_string(compat.get("version"), "version"),
            extra_info=_string(meta.get("extraInfo"), "extraInfo"),
        )
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ExtensionError(f"invalid manifest: {exc}") from exc
    return version, metadata
