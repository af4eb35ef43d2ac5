"""blang/semver v4 ``ParseRange``: the language extension manifests write their Talos constraint in.

Upstream checks ``compatibility.talos.version`` with ``github.com/blang/semver/v4``'s ``ParseRange``
(``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/extensions/validate.go``), quirks included: AND with
spaces, OR with ``||``, operators ``= == != ! > >= < <=`` and ``x`` wildcards. Bounds are parsed
with :func:`common.talos.version.parse_strict` (blang's strict ``Parse``), the one semver parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import semver

from common.errors import InvalidInputError
from common.talos.version import parse_strict, release_core

__all__ = ["Range", "RangeError", "parse_range", "talos_core_version", "trim_v"]

#: upstream validates against its own version when the target one does not parse (the library's tag).
_LIBRARY_VERSION = semver.Version(1, 14, 0)

Range = Callable[[semver.Version], bool]
_COMPARATORS: dict[str, Callable[[int], bool]] = {
    "": lambda c: c == 0,
    "=": lambda c: c == 0,
    "==": lambda c: c == 0,
    "!": lambda c: c != 0,
    "!=": lambda c: c != 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
}


class RangeError(ValueError):
    """A constraint blang/semver would refuse to parse."""


def trim_v(constraint: str) -> str:
    """Upstream's ``trim``: drop every ``v`` directly followed by a digit (``>= v1.10.0``)."""
    return re.sub(r"v(?=[0-9])", "", constraint)


def _split_and_trim(s: str) -> list[str]:
    """Split on spaces, except after ``>``, ``<`` or ``=`` (``>= 1.0.0`` is one part); drops 1-char parts."""
    parts: list[str] = []
    last = 0
    last_char = ""
    for i, ch in enumerate(s):
        if ch == " " and last_char not in (">", "<", "="):
            if last < i - 1:
                parts.append(s[last:i])
            last = i + 1
        elif ch != " ":
            last_char = ch
    if last < len(s) - 1:
        parts.append(s[last:])
    return [p.replace(" ", "") for p in parts]


def _split_or(parts: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    last = 0
    for i, part in enumerate(parts):
        if part == "||":
            if i == 0:
                raise RangeError("First element in range is '||'")
            out.append(parts[last:i])
            last = i + 1
    if last == len(parts):
        raise RangeError("Last element in range is '||'")
    out.append(parts[last:])
    return out


def _split_comparator(s: str) -> tuple[str, str]:
    for i, ch in enumerate(s):
        if ch.isdecimal():
            return s[:i].strip(), s[i:]
    raise RangeError(f"Could not get version from string: {s!r}")


def _bump(version: str, index: int) -> str:
    parts = version.split(".")
    try:
        parts[index] = str(int(parts[index]) + 1)
    except (ValueError, IndexError):
        return ""
    return ".".join(parts)


def _expand_wildcard(part: str) -> list[str]:
    """blang's ``expandWildcardVersion`` for one part (``>1.2.x`` → ``>=1.3.0``), quirks included."""
    op, version = _split_comparator(part)
    if ".x" not in part:
        return [part]
    pieces = version.split(".")
    kind = len(pieces) if pieces[-1] == "x" and len(pieces) in (2, 3) else 0  # 2: minor, 3: patch
    flat = version.replace(".x.x", ".x", 1).replace(".x", ".0", 1)
    if len(flat.split(".")) == 2:
        flat += ".0"
    out: list[str] = []
    increment = False
    result_op = ""
    if op == ">":
        result_op, increment = ">=", True
    elif op == ">=":
        result_op = ">="
    elif op == "<":
        result_op = "<"
    elif op == "<=":
        result_op, increment = "<", True
    elif op in ("", "=", "=="):
        out.append(">=" + flat)
        result_op, increment = "<", True
    elif op in ("!=", "!"):
        out.append("<" + flat)
        result_op, increment = ">=", True
    result = flat
    if increment:
        result = _bump(flat, 1) if kind == 3 else _bump(flat, 0) if kind == 2 else ""
    return [*out, result_op + result]


def _parse_version(text: str) -> semver.Version:
    """A range's bound: blang's strict ``Parse`` (no ``v``, no padding, no spaces)."""
    if not text or any(c.isspace() for c in text):
        raise RangeError(f"invalid version {text!r}")
    try:
        return parse_strict(text)
    except InvalidInputError as exc:
        raise RangeError(str(exc).removeprefix("error parsing version: ")) from exc


def _comparison(part: str) -> Range:
    op, text = _split_comparator(part)
    test = _COMPARATORS.get(op)
    if test is None:
        raise RangeError(f"Could not parse Range {part!r}: Could not parse comparator {op!r}")
    bound = _parse_version(text)
    return lambda v: test(v.replace(build=None).compare(bound))


def parse_range(constraint: str) -> Range:
    """blang/semver ``ParseRange``: AND with spaces, OR with ``||``, ops ``= == != ! > >= < <=``, ``x``."""
    alternatives: list[list[Range]] = []
    for conjunction in _split_or(_split_and_trim(constraint)):
        expanded = [p for part in conjunction for p in _expand_wildcard(part)]
        alternatives.append([_comparison(p) for p in expanded])
    return lambda v: any(all(test(v) for test in alt) for alt in alternatives)


def talos_core_version(version: str) -> semver.Version:
    """The version constraints are checked against: major.minor.patch (pre-release dropped)."""
    parsed = release_core(version)
    return _LIBRARY_VERSION if parsed is None else parsed
