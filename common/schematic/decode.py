"""Decode a schematic body exactly as upstream does (go-yaml v4 ``Decoder`` with ``KnownFields(true)``).

The decoded values feed the schematic ID, so typing must be Go's, not PyYAML's (YAML 1.1): we take only
PyYAML's low-level event stream, build our own node tree, and type scalars with go-yaml's resolver and
constructor rules (``internal/libyaml/{resolver,constructor}.go``), including its error texts.

Deliberate differences from upstream (go-yaml HEAD, image-factory HEAD):

* anchors/aliases, explicit tags (``!!str``, ``!foo``) and merge keys (``<<``) are refused while reading
  events, so alias bombs never expand; so are documents nested deeper than ``max_depth`` or holding more
  than ``max_nodes`` nodes (upstream accepts all of these);
* a stream without any document (empty, blank or comment-only body), upstream's bare ``EOF``, is reported
  as ``invalid schematic: empty document (EOF)``; an explicit ``null``/``~``/``---`` document is, as
  upstream, the empty schematic;
* ``secureboot.enrollKeys`` is checked here (case-insensitively, the text is kept as written), upstream
  only checks it when an image is built;
* syntax errors are worded ``yaml: line N: <problem>`` with libyaml's problem text rather than go-yaml's
  ``go-yaml load error in <stage> at L.C`` form; the parser is libyaml's (via PyYAML), which refuses a
  few YAML 1.2 forms go-yaml's fork accepts (e.g. flow scalars starting with ``:`` such as ``[:a]``);
* maps inside ``overlay.options`` whose keys collide in Python but not in Go (``1``, ``1.0``, ``true``) or
  that use NaN as a key are refused instead of being silently merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from common.errors import InvalidInputError
from common.schematic.emit import go_resolve
from common.schematic.model import (
    BOOTLOADERS,
    ENROLL_KEYS,
    Customization,
    MetaValue,
    Overlay,
    Schematic,
    SecureBoot,
)

_FAST_PARSER: Any = None
if yaml.__with_libyaml__:  # libyaml's own parser: the C original that go-yaml was ported from
    from yaml import cyaml

    _FAST_PARSER = cyaml.CParser  # type: ignore[attr-defined]

__all__ = ["SchematicDecodeError", "parse_schematic"]


class SchematicDecodeError(InvalidInputError):
    """The body is not a schematic upstream would accept; ``errors`` lists each problem found."""

    def __init__(self, message: str, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors or (message,)


# ---------------------------------------------------------------------------------------------------------
# Node tree from events

_SCALAR, _MAPPING, _SEQUENCE = range(3)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _YNode:
    """A composed YAML node; ``quoted`` covers quoted and block scalars (always strings for go-yaml)."""

    __slots__ = ("children", "kind", "line", "quoted", "value")

    def __init__(self, kind: int, line: int, value: str = "", quoted: bool = False) -> None:
        self.kind = kind
        self.line = line
        self.value = value
        self.quoted = quoted
        self.children: list[_YNode] = []


def _fail(line: int, problem: str) -> SchematicDecodeError:
    return SchematicDecodeError(f"yaml: line {line}: {problem}")


def _new_parser(text: str) -> Any:
    if _FAST_PARSER is not None:
        return _FAST_PARSER(text)
    return yaml.SafeLoader(text)


def _syntax_error(err: yaml.YAMLError, text: str) -> SchematicDecodeError:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        problem = err.problem or "invalid YAML"
        if err.context:
            problem = f"{problem} ({err.context})"
        return _fail(err.problem_mark.line + 1, problem)
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(err.position, 0)) + 1
        code = ord(err.character) if isinstance(err.character, str) else int(err.character)
        return _fail(line, f"invalid character U+{code:04X}: {err.reason}")
    return SchematicDecodeError("yaml: " + " ".join(str(err).split()))


def _refuse_event(event: Any) -> SchematicDecodeError:
    line = event.start_mark.line + 1
    if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
        return _fail(line, "anchors and aliases are not supported in schematics")
    tag = event.tag.replace("tag:yaml.org,2002:", "!!", 1)
    return _fail(line, f"explicit tags are not supported in schematics (found {tag})")


# Blank lines, comment lines and "..." markers before the first document. go-yaml's parser skips such
# document-end markers; libyaml (PyYAML's C parser) rejects them, so they are blanked out beforehand.
_LEADING_END_MARKERS = re.compile(r"(?:[ \t]*(?:#[^\r\n]*)?(?:\r\n|\r|\n)|\.\.\.(?=[ \t\r\n]|\Z))*")


def _blank_leading_end_markers(text: str) -> str:
    prefix = _LEADING_END_MARKERS.match(text)
    if prefix is None or "..." not in prefix.group():
        return text
    end = prefix.end()
    return re.sub(r"^\.\.\.", "   ", text[:end], flags=re.MULTILINE) + text[end:]


def _compose(text: str, max_depth: int, max_nodes: int) -> _YNode | None:
    """The first document as a node tree, or None when the stream holds no document.

    Stops at the first document's end so later documents are never even parsed; refuses aliases, tags,
    merge keys, deep nesting and oversized documents as soon as their event arrives.
    """
    try:
        parser = _new_parser(_blank_leading_end_markers(text))
    except yaml.YAMLError as err:  # the pure-Python reader checks characters up front
        raise _syntax_error(err, text) from None
    get_event = parser.get_event
    check_surrogates = _FAST_PARSER is None  # libyaml itself rejects surrogate escapes
    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    mapping_start, sequence_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
    mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
    try:
        stack: list[_YNode] = []
        root: _YNode | None = None
        count = 0
        while True:
            event = get_event()
            cls = type(event)
            if cls is scalar_event:
                node_kind = _SCALAR
            elif cls is mapping_start:
                node_kind = _MAPPING
            elif cls is sequence_start:
                node_kind = _SEQUENCE
            elif cls is mapping_end or cls is sequence_end:
                stack.pop()
                continue
            elif cls is yaml.DocumentEndEvent:
                return root
            elif cls is yaml.StreamEndEvent:
                return None
            elif cls is alias_event:
                raise _refuse_event(event)
            else:  # stream / document start
                continue
            if event.anchor is not None or event.tag is not None:
                raise _refuse_event(event)
            count += 1
            if count > max_nodes:
                raise _fail(event.start_mark.line + 1, f"more than {max_nodes} YAML nodes; not a schematic")
            parent = stack[-1] if stack else None
            if node_kind == _SCALAR:
                value = event.value
                quoted = bool(event.style)
                if (
                    value == "<<"
                    and not quoted
                    and parent is not None
                    and parent.kind == _MAPPING
                    and len(parent.children) % 2 == 0
                ):
                    raise _fail(event.start_mark.line + 1, "merge keys (<<) are not supported in schematics")
                if check_surrogates and _SURROGATE.search(value):
                    raise _fail(event.start_mark.line + 1, "found invalid Unicode character escape code")
                node = _YNode(_SCALAR, event.start_mark.line + 1, value, quoted)
            else:
                if len(stack) >= max_depth:
                    raise _fail(
                        event.start_mark.line + 1, f"nesting deeper than {max_depth} levels is not supported"
                    )
                node = _YNode(node_kind, event.start_mark.line + 1)
                stack.append(node)
            if parent is None:
                root = node
            else:
                parent.children.append(node)
    except yaml.YAMLError as err:
        raise _syntax_error(err, text) from None
    finally:
        parser.dispose()


# ---------------------------------------------------------------------------------------------------------
# Construction with go-yaml's rules. A "target" describes the Go type being decoded into.


@dataclass(frozen=True, slots=True)
class _Target:
    kind: str  # str, uint, bool, bootloader, any, struct, slice, strmap
    go_type: str
    bits: int = 0  # uint width
    fields: dict[str, _Target] = field(default_factory=dict)
    elem: _Target | None = None


_STR = _Target("str", "string")
_ANY = _Target("any", "interface {}")
_META = _Target(
    "struct", "schematic.MetaValue", fields={"key": _Target("uint", "uint8", bits=8), "value": _STR}
)
_OVERLAY = _Target(
    "struct",
    "schematic.Overlay",
    fields={"image": _STR, "name": _STR, "options": _Target("strmap", "map[string]interface {}")},
)
_CUSTOMIZATION = _Target(
    "struct",
    "schematic.Customization",
    fields={
        "embeddedMachineConfiguration": _STR,
        "extraKernelArgs": _Target("slice", "[]string", elem=_STR),
        "meta": _Target("slice", "[]schematic.MetaValue", elem=_META),
        "systemExtensions": _Target(
            "struct",
            "schematic.SystemExtensions",
            fields={"officialExtensions": _Target("slice", "[]string", elem=_STR)},
        ),
        "bootloader": _Target("bootloader", "imageropts.BootloaderKind"),
        "secureboot": _Target(
            "struct",
            "schematic.SecureBootCustomization",
            fields={"enrollKeys": _STR, "includeWellKnownCertificates": _Target("bool", "bool")},
        ),
        "diskImage": _Target(
            "struct",
            "schematic.DiskImageCustomization",
            fields={"sectorSize": _Target("uint", "uint", bits=64)},
        ),
    },
)
_SCHEMATIC = _Target(
    "struct",
    "schematic.Schematic",
    fields={"owner": _STR, "overlay": _OVERLAY, "customization": _CUSTOMIZATION},
)

_YAML11_TRUE = frozenset(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"))
_YAML11_FALSE = frozenset(("n", "N", "no", "No", "NO", "off", "Off", "OFF"))
_MISSING = object()  # "construction failed": the Go target keeps its previous value


def _go_quote(text: str) -> str:
    """Go's ``%#v`` of a string, as go-yaml prints duplicate keys."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _excerpt(value: str) -> str:
    raw = value.encode()
    if len(raw) > 10:
        return raw[:7].decode(errors="ignore") + "..."
    return value


def _float_to_uint(value: float, bits: int) -> int | None:
    if value != value or value < 0 or value >= 2.0**64 or value != int(value):
        return None
    number = int(value)
    return number if number < (1 << bits) else None


class _Constructor:
    """Mirrors go-yaml's Constructor: type errors are collected, hard failures raise at once."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, node: _YNode, message: str) -> None:
        self.errors.append(f"line {node.line}: {message}")

    def tag_error(self, node: _YNode, tag: str, target: _Target) -> None:
        if node.kind == _SCALAR:
            self.error(node, f"cannot construct !!{tag} `{_excerpt(node.value)}` into {target.go_type}")
        else:
            self.error(node, f"cannot construct !!{tag} into {target.go_type}")

    # -- dispatch -------------------------------------------------------------------------------------------

    def construct(self, node: _YNode, target: _Target) -> Any:
        """The Go value for ``node``, or ``_MISSING`` when go-yaml would leave the target untouched."""
        if node.kind != _SCALAR and target.kind == "bootloader":
            tag = "map" if node.kind == _MAPPING else "seq"
            self.error(node, f"cannot construct !!{tag} into {target.go_type} (TextUnmarshaler)")
            return _MISSING
        if node.kind == _SCALAR:
            return self.scalar(node, target)
        if node.kind == _MAPPING:
            return self.mapping(node, target)
        return self.sequence(node, target)

    def scalar(self, node: _YNode, target: _Target) -> Any:
        resolved: Any
        if node.quoted:
            tag, resolved = "str", node.value
        else:
            tag, resolved = go_resolve(node.value)
        kind = target.kind
        if tag == "null":
            return None if kind in ("any", "slice", "strmap") else _MISSING
        if kind == "bootloader":
            name = node.value if node.value in BOOTLOADERS else node.value.lower()
            if name not in BOOTLOADERS:
                allowed = ", ".join(BOOTLOADERS)
                self.error(
                    node, f"{node.value} does not belong to BootloaderKind values (allowed: {allowed})"
                )
                return _MISSING
            return "" if name == "none" else name
        if kind == "any":
            if tag == "merge":
                return _MISSING  # go-yaml's constructMerge: a bare << value is dropped
            return resolved
        if kind == "str":
            if tag == "timestamp":
                self.tag_error(node, tag, target)
                return _MISSING
            return node.value  # ints, floats, bools keep their source text
        if tag == "merge":
            return _MISSING  # go-yaml's constructMerge fails silently for every other target
        if kind == "bool":
            if tag == "bool":
                return resolved
            if tag == "str" and node.value in _YAML11_TRUE:
                return True
            if tag == "str" and node.value in _YAML11_FALSE:
                return False
        elif kind == "uint":
            if tag == "int" and 0 <= resolved < (1 << target.bits):
                return int(resolved)
            if tag == "float":
                number = _float_to_uint(resolved, target.bits)
                if number is not None:
                    return number
        self.tag_error(node, tag, target)
        return _MISSING

    def check_unique(self, node: _YNode) -> bool:
        """go-yaml's UniqueKeys check: same node kind and same source text; errors in Go's (i, j) order."""
        groups: dict[tuple[int, str], list[int]] = {}
        keys = node.children[0::2]
        for index, key in enumerate(keys):
            groups.setdefault((key.kind, key.value), []).append(index)
        found = 0
        for index, key in enumerate(keys):
            group = groups[(key.kind, key.value)]
            position = group.index(index)
            for later in group[position + 1 :]:
                dup = keys[later]
                self.error(dup, f"mapping key {_go_quote(dup.value)} already defined at line {key.line}")
                found += 1
                if found >= 10:
                    return False
        return found == 0

    def mapping(self, node: _YNode, target: _Target) -> Any:
        if not self.check_unique(node):
            return _MISSING
        pairs = list(zip(node.children[0::2], node.children[1::2], strict=True))
        if target.kind == "struct":
            return self.struct(pairs, target)
        if target.kind == "strmap":
            return self.string_map(pairs)
        if target.kind == "any":
            if all(k.kind == _SCALAR and (k.quoted or go_resolve(k.value)[0] == "str") for k, _ in pairs):
                return self.string_map(pairs)
            return self.general_map(pairs)
        self.tag_error(node, "map", target)
        return _MISSING

    def string_map(self, pairs: list[tuple[_YNode, _YNode]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            name = self.construct(key, _STR)
            if name is _MISSING:
                continue
            item = self.construct(value, _ANY)
            if item is not _MISSING:
                out[name] = item
        return out

    def general_map(self, pairs: list[tuple[_YNode, _YNode]]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        kinds: dict[Any, type] = {}
        for key, value in pairs:
            if key.kind != _SCALAR:
                raise _fail(key.line, "cannot use a mapping or sequence as a map key")
            name = self.construct(key, _ANY)
            if name is _MISSING:
                continue
            if isinstance(name, float) and name != name:
                raise _fail(key.line, "NaN map keys are not supported in schematics")
            previous = kinds.get(name, type(name))
            if previous is not type(name):
                raise _fail(
                    key.line, f"map key {key.value} equals an earlier key of another type; not supported"
                )
            item = self.construct(value, _ANY)
            if item is not _MISSING:
                kinds[name] = type(name)
                out[name] = item
        return out

    def struct(self, pairs: list[tuple[_YNode, _YNode]], target: _Target) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            name = self.construct(key, _STR)
            if name is _MISSING:
                continue
            field_target = target.fields.get(name)
            if field_target is None:
                self.error(key, f"field {name} not found in type {target.go_type}")
                continue
            item = self.construct(value, field_target)
            if item is not _MISSING:
                out[name] = item
        return out

    def sequence(self, node: _YNode, target: _Target) -> Any:
        if target.kind == "slice":
            assert target.elem is not None
            elem = target.elem
        elif target.kind == "any":
            elem = _ANY
        else:
            self.tag_error(node, "seq", target)
            return _MISSING
        items = [self.construct(child, elem) for child in node.children]
        return [item for item in items if item is not _MISSING]  # failed and null items are dropped


# ---------------------------------------------------------------------------------------------------------
# Public API


def _decode_text(data: bytes) -> str:
    """Bytes → text the way go-yaml's reader does: UTF-8 (optional BOM) or BOM-marked UTF-16."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16-le" if data.startswith(b"\xff\xfe") else "utf-16-be"
        body, start = data[2:], 2
    else:
        codec, body, start = "utf-8", data, 0
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as err:
        raise SchematicDecodeError(
            f"invalid schematic: input is not valid {codec.upper()} (at byte {err.start + start})"
        ) from None
    return text.removeprefix("\ufeff")


def _build(fields: dict[str, Any]) -> Schematic:
    overlay = fields.get("overlay", {})
    custom = fields.get("customization", {})
    extensions = custom.get("systemExtensions", {})
    secureboot = custom.get("secureboot", {})
    return Schematic(
        owner=fields.get("owner", ""),
        overlay=Overlay(
            image=overlay.get("image", ""), name=overlay.get("name", ""), options=overlay.get("options") or {}
        ),
        customization=Customization(
            embedded_machine_configuration=custom.get("embeddedMachineConfiguration", ""),
            extra_kernel_args=tuple(custom.get("extraKernelArgs") or ()),
            meta=tuple(MetaValue(m.get("key", 0), m.get("value", "")) for m in custom.get("meta") or ()),
            official_extensions=tuple(extensions.get("officialExtensions") or ()),
            bootloader=custom.get("bootloader", ""),
            secureboot=SecureBoot(
                enroll_keys=secureboot.get("enrollKeys", ""),
                include_well_known_certificates=secureboot.get("includeWellKnownCertificates", False),
            ),
            sector_size=custom.get("diskImage", {}).get("sectorSize", 0),
        ),
    )


def _validate(s: Schematic, allow_owner: bool) -> None:
    if s.owner and not allow_owner:
        raise SchematicDecodeError("owner field is only supported in Enterprise edition")
    enroll = s.customization.secureboot.enroll_keys
    if enroll and enroll not in ENROLL_KEYS and enroll.lower() not in ENROLL_KEYS:
        raise SchematicDecodeError(
            f"invalid secureboot enrollKeys value {_go_quote(enroll)}: {enroll} does not belong to "
            f"SDBootEnrollKeys values (allowed: {', '.join(ENROLL_KEYS)})"
        )


def parse_schematic(
    data: bytes, *, max_depth: int = 32, max_nodes: int = 10_000, allow_owner: bool = False
) -> Schematic:
    """Decode a request body into a :class:`Schematic`, accepting and typing exactly what upstream does.

    Raises :class:`SchematicDecodeError` (an ``InvalidInputError``, HTTP 400) with go-yaml-style messages,
    e.g. ``yaml: construct errors: line 1: field something not found in type schematic.Schematic``.
    A body holding no YAML document at all raises ``invalid schematic: empty document (EOF)``.
    Documents nested deeper than ``max_depth`` or with more than ``max_nodes`` YAML nodes are refused
    (upstream has no such limits; real schematics have a few dozen nodes) so hostile bodies fail fast.
    ``allow_owner`` is for Enterprise-like deployments; by default ``owner`` is refused like upstream's
    community edition does.
    """
    text = _decode_text(bytes(data))
    root = _compose(text, max_depth, max_nodes)
    if root is None:
        raise SchematicDecodeError("invalid schematic: empty document (EOF)")
    constructor = _Constructor()
    fields = constructor.construct(root, _SCHEMATIC)
    if constructor.errors:
        raise SchematicDecodeError(
            "yaml: construct errors: " + "; ".join(constructor.errors), tuple(constructor.errors)
        )
    schematic = _build(fields if isinstance(fields, dict) else {})
    _validate(schematic, allow_owner)
    return schematic
