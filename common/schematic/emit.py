"""Canonical schematic YAML, byte-for-byte what go-yaml v4 ``yaml.Marshal`` writes for upstream's struct.

The schematic ID is ``sha256(yaml.Marshal(&schematic))``, so every formatting decision of go-yaml (indent 4,
indented block sequences, string quoting, literal blocks, map key order, float text) is reproduced here.
This module is written from a reading of go-yaml's representer, desolver, serializer and emitter
(``internal/libyaml/{representer,desolver,serializer,emitter,resolver}.go``); it is a re-implementation,
not a translation, restricted to what ``Marshal`` can produce (block style, no comments/anchors/tags).

It also holds :func:`go_resolve`, go-yaml's implicit typing of plain scalars, shared with the decoder:
the emitter needs it to know which strings must be quoted.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.schematic.model import GoTime, Schematic

__all__ = ["Struct", "go_format_float", "go_resolve", "marshal", "marshal_value", "schematic_id"]

# ---------------------------------------------------------------------------------------------------------
# Go's implicit scalar resolution (resolver.go: resolve)

_MIN_INT64 = -(1 << 63)
_MAX_INT64 = (1 << 63) - 1
_MAX_UINT64 = (1 << 64) - 1

_RESOLVE_MAP: dict[str, tuple[str, Any]] = {}
for _words, _item in (
    (("true", "True", "TRUE"), ("bool", True)),
    (("false", "False", "FALSE"), ("bool", False)),
    (("", "~", "null", "Null", "NULL"), ("null", None)),
    ((".nan", ".NaN", ".NAN"), ("float", math.nan)),
    ((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), ("float", math.inf)),
    (("-.inf", "-.Inf", "-.INF"), ("float", -math.inf)),
    (("-0", "-0.0"), ("float", -0.0)),
    (("<<",), ("merge", "<<")),
):
    for _word in _words:
        _RESOLVE_MAP[_word] = _item

_MAP_HINT = frozenset("yYnNtTfFoO~<")
_DIGITS = frozenset("0123456789")
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_OLD_BOOLS = frozenset(
    ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF")
)


def _go_parse_uint(s: str) -> int | None:
    """strconv.ParseUint(s, 0, 64) for a string without underscores; None on any error."""
    if not s:
        return None
    base = 10
    if s[0] == "0":
        prefix = s[1:2].lower()
        if len(s) >= 3 and prefix in ("b", "o", "x"):
            base = {"b": 2, "o": 8, "x": 16}[prefix]
            s = s[2:]
        else:
            base = 8
            s = s[1:]
    value = 0
    for ch in s:
        if "0" <= ch <= "9":
            digit = ord(ch) - 48
        elif "a" <= ch.lower() <= "z" and ch.isascii():
            digit = ord(ch.lower()) - 87
        else:
            return None
        if digit >= base:
            return None
        value = value * base + digit
        if value > _MAX_UINT64:
            return None
    return value


def _go_parse_int(s: str) -> int | None:
    """strconv.ParseInt(s, 0, 64); None on syntax or range errors."""
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    magnitude = _go_parse_uint(s)
    if magnitude is None:
        return None
    if negative:
        return -magnitude if magnitude <= -_MIN_INT64 else None
    return magnitude if magnitude <= _MAX_INT64 else None


def _to_float(text: str) -> float | None:
    """strconv.ParseFloat on a regex-validated decimal; Go reports overflow as an error."""
    value = float(text)
    return None if math.isinf(value) else value


def _days_in(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _getnum(s: str, pos: int, fixed: bool) -> tuple[int, int] | None:
    """Go time's getnum: one or two ASCII digits (exactly two when ``fixed``)."""
    if pos >= len(s) or s[pos] not in _DIGITS:
        return None
    if pos + 1 >= len(s) or s[pos + 1] not in _DIGITS:
        return None if fixed else (ord(s[pos]) - 48, pos + 1)
    return (ord(s[pos]) - 48) * 10 + ord(s[pos + 1]) - 48, pos + 2


def _parse_clock(s: str, pos: int) -> tuple[int, int, int, int, int] | None:
    """``15:4:5.999999999`` → (hour, minute, second, nanoseconds, next position)."""
    fields: list[int] = []
    for index, limit in enumerate((24, 60, 60)):
        if index and s[pos : pos + 1] != ":":
            return None
        got = _getnum(s, pos + (1 if index else 0), False)
        if got is None or got[0] >= limit:
            return None
        value, pos = got
        fields.append(value)
    hour, minute, second = fields
    nanos = 0
    if pos + 1 < len(s) and s[pos] in ".," and s[pos + 1] in _DIGITS:
        end = pos + 1
        while end < len(s) and s[end] in _DIGITS:
            end += 1
        nanos = int(s[pos + 1 : min(end, pos + 10)].ljust(9, "0"))
        pos = end
    return hour, minute, second, nanos, pos


def _parse_timestamp(s: str) -> GoTime | None:
    """go-yaml's parseTimestamp (Go ``time.Parse`` with its four layouts) → RFC 3339 nano text."""
    if len(s) < 5 or s[4] != "-" or any(ch not in _DIGITS for ch in s[:4]):
        return None
    year = int(s[:4])
    got = _getnum(s, 5, False)
    if got is None or not 1 <= got[0] <= 12:
        return None
    month, pos = got
    if s[pos : pos + 1] != "-":
        return None
    got = _getnum(s, pos + 1, False)
    if got is None:
        return None
    day, pos = got
    if not 1 <= day <= _days_in(year, month):
        return None
    hour = minute = second = nanos = offset = 0
    if pos < len(s):
        sep = s[pos]
        if sep == " ":
            while pos < len(s) and s[pos] == " ":
                pos += 1
        elif sep in "Tt":
            pos += 1
        else:
            return None
        clock = _parse_clock(s, pos)
        if clock is None:
            return None
        hour, minute, second, nanos, pos = clock
        if sep in "Tt":
            rest = s[pos:]
            if rest == "Z":
                pos += 1
            else:
                if len(rest) < 6 or rest[3] != ":" or rest[0] not in "+-":
                    return None
                hh = _getnum(rest, 1, True)
                mm = _getnum(rest, 4, True)
                if hh is None or mm is None or hh[0] > 24 or mm[0] > 60:
                    return None
                offset = (hh[0] * 60 + mm[0]) * 60 * (-1 if rest[0] == "-" else 1)
                pos += 6
        if pos != len(s):
            return None
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    if offset == 0:
        text += "Z"
    else:
        minutes = abs(offset) // 60
        text += f"{'-' if offset < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
    return GoTime(text)


def go_resolve(text: str) -> tuple[str, Any]:
    """go-yaml's implicit typing of a plain scalar: (tag, Go-typed value).

    Tags are ``str``, ``int``, ``float``, ``bool``, ``null``, ``timestamp`` and ``merge``. YAML 1.2-ish:
    ``yes``/``on`` are strings, ``010`` is octal 8 (Go ``ParseInt`` base 0), ``08`` is the float 8.
    """
    hint = text[0] if text else "N"
    if hint in _DIGITS:
        kind = "D"
    elif hint in "+-":
        kind = "S"
    elif hint == ".":
        kind = "."
    elif hint in _MAP_HINT or not text:
        kind = "M"
    else:
        return "str", text
    item = _RESOLVE_MAP.get(text)
    if item is not None:
        return item
    if kind == "." and _DOT_FLOAT.fullmatch(text):
        value = _to_float(text)
        if value is not None:
            return "float", value
    elif kind in ("D", "S"):
        if kind == "D":
            stamp = _parse_timestamp(text)
            if stamp is not None:
                return "timestamp", stamp
        plain = text.replace("_", "")
        number = _go_parse_int(plain)
        if number is not None:
            return "int", number
        if plain[:1] not in ("+", "-"):
            number = _go_parse_uint(plain)
            if number is not None:
                return "int", number
        if _YAML_FLOAT.fullmatch(plain):
            value = _to_float(plain)
            if value is not None:
                return "float", value
    return "str", text


# ---------------------------------------------------------------------------------------------------------
# Representation: Go value → node tree with a chosen scalar style

_PLAIN, _SINGLE, _DOUBLE, _LITERAL = range(4)


@dataclass(slots=True)
class _Scalar:
    text: str
    style: int


@dataclass(slots=True)
class _Map:
    pairs: list[tuple[_Node, _Node]]


@dataclass(slots=True)
class _Seq:
    items: list[_Node]


_Node = _Scalar | _Map | _Seq

# Go unicode.IsSpace (Latin-1 set plus the White_Space property).
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _string_node(s: str, legacy_quotes: bool) -> _Scalar:
    """Representer ``stringv`` + desolver: the style go-yaml asks the emitter for."""
    if "\n" in s:
        literal = len(s.encode()) >= 2 and any(ch not in _GO_SPACES for ch in s)
        return _Scalar(s, _LITERAL if literal else _DOUBLE)
    if s in _OLD_BOOLS or s == "<<" or (":" in s and _BASE60.fullmatch(s)):
        return _Scalar(s, _DOUBLE if legacy_quotes else _SINGLE)
    if go_resolve(s)[0] != "str":
        return _Scalar(s, _DOUBLE)
    return _Scalar(s, _PLAIN)


def go_format_float(value: float) -> str:
    """Go ``strconv.FormatFloat(v, 'g', -1, 64)`` with go-yaml's ``.inf``/``.nan`` spellings."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    scale = (int(exponent) if exponent else 0) - len(fraction)
    stripped = digits.rstrip("0")
    scale += len(digits) - len(stripped)
    digits = stripped
    count = len(digits)
    point = count + scale  # value = 0.<digits> * 10**point
    exp = point - 1
    if exp < -4 or exp >= 6:
        text = digits[0] + ("." + digits[1:] if count > 1 else "")
        text += f"e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= count:
        text = digits + "0" * (point - count)
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if value < 0 else "") + text


def _key_kind(value: Any) -> int:
    """reflect.Kind number of a decoded map key (orders mixed-type keys like go-yaml)."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 2 if value <= _MAX_INT64 else 11
    if isinstance(value, float):
        return 14
    if value is None:
        return 20
    if isinstance(value, str):
        return 24
    if isinstance(value, GoTime):
        return 25
    raise TypeError(f"unsupported map key type {type(value).__name__}")


def _is_go_digit(ch: str) -> bool:
    return ch in _DIGITS or (ch > "\xff" and unicodedata.category(ch) == "Nd")


def _wrap64(value: int) -> int:
    return (value + (1 << 63)) % (1 << 64) - (1 << 63)


def _go_string_less(a: str, b: str) -> bool:
    """go-yaml ``keyList.Less`` for two strings: letters vs non-letters, embedded decimal numbers."""
    digits = False
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            digits = _is_go_digit(ca)
            continue
        a_letter, b_letter = ca.isalpha(), cb.isalpha()
        if a_letter and b_letter:
            return ca < cb
        if a_letter or b_letter:
            return a_letter if digits else b_letter
        an = bn = 0
        if ca == "0" or cb == "0":
            for j in range(i - 1, -1, -1):
                if not _is_go_digit(a[j]):
                    break
                if a[j] != "0":
                    an = bn = 1
                    break
        ai = i
        while ai < len(a) and _is_go_digit(a[ai]):
            an = _wrap64(an * 10 + ord(a[ai]) - 48)
            ai += 1
        bi = i
        while bi < len(b) and _is_go_digit(b[bi]):
            bn = _wrap64(bn * 10 + ord(b[bi]) - 48)
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ca < cb
    return len(a) < len(b)


def _key_less(a: Any, b: Any) -> bool:
    """go-yaml ``keyList.Less``: numbers and bools numerically, then by kind, strings naturally."""
    ak, bk = _key_kind(a), _key_kind(b)
    if ak in (1, 2, 11, 14) and bk in (1, 2, 11, 14):
        af, bf = float(a), float(b)
        if af != bf:
            return af < bf
        if ak != bk:
            return ak < bk
        if ak == 1:
            return not a and bool(b)
        return bool(a < b)
    if ak != 24 or bk != 24:
        return ak < bk
    return _go_string_less(a, b)


def _sorted_keys(keys: list[Any]) -> list[Any]:
    """Sort like Go's ``sort.Sort``: insertion sort up to 12 keys (identical even where Less is not a
    strict order), a comparison sort above that (identical whenever Less is consistent)."""
    if len(keys) <= 12:
        out = list(keys)
        for i in range(1, len(out)):
            j = i
            while j > 0 and _key_less(out[j], out[j - 1]):
                out[j], out[j - 1] = out[j - 1], out[j]
                j -= 1
        return out

    def compare(x: Any, y: Any) -> int:
        return -1 if _key_less(x, y) else (1 if _key_less(y, x) else 0)

    return sorted(keys, key=functools.cmp_to_key(compare))


@dataclass(frozen=True)
class Struct:
    """A Go struct for :func:`marshal_value`: fields keep their declaration order (maps are sorted).

    ``omitempty`` is the caller's business: leave such fields out.
    """

    fields: tuple[tuple[str, Any], ...]


def _value_node(value: Any, legacy_quotes: bool) -> _Node:
    """Representer for the Go-typed values found in overlay options (and for :func:`marshal_value`)."""
    if isinstance(value, Struct):
        return _Map(
            [(_string_node(k, legacy_quotes), _value_node(v, legacy_quotes)) for k, v in value.fields]
        )
    if isinstance(value, str):
        return _string_node(value, legacy_quotes)
    if isinstance(value, bool):
        return _Scalar("true" if value else "false", _PLAIN)
    if isinstance(value, int):
        if not _MIN_INT64 <= value <= _MAX_UINT64:
            raise ValueError(f"integer {value} does not fit a Go int64/uint64")
        return _Scalar(str(value), _PLAIN)
    if isinstance(value, float):
        return _Scalar(go_format_float(value), _PLAIN)
    if value is None:
        return _Scalar("null", _PLAIN)
    if isinstance(value, GoTime):
        return _Scalar(value.text, _PLAIN)
    if isinstance(value, Mapping):
        keys = _sorted_keys(list(value.keys()))
        return _Map([(_value_node(k, legacy_quotes), _value_node(value[k], legacy_quotes)) for k in keys])
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return _Seq([_value_node(item, legacy_quotes) for item in value])
    raise TypeError(f"cannot represent {type(value).__name__} as YAML")


def _schematic_node(s: Schematic, legacy_quotes: bool) -> _Map:
    """The Go struct walk: field order, ``omitempty`` and the always-present ``customization``."""

    def key(name: str) -> _Scalar:
        return _Scalar(name, _PLAIN)

    def text(value: str) -> _Scalar:
        return _string_node(value, legacy_quotes)

    def strings(values: Sequence[str]) -> _Seq:
        return _Seq([text(v) for v in values])

    root: list[tuple[_Node, _Node]] = []
    if s.owner:
        root.append((key("owner"), text(s.owner)))
    overlay = s.overlay
    if not overlay.is_empty:
        fields: list[tuple[_Node, _Node]] = [
            (key("image"), text(overlay.image)),
            (key("name"), text(overlay.name)),
        ]
        if overlay.options:
            fields.append((key("options"), _value_node(overlay.options, legacy_quotes)))
        root.append((key("overlay"), _Map(fields)))
    c = s.customization
    custom: list[tuple[_Node, _Node]] = []
    if c.embedded_machine_configuration:
        custom.append((key("embeddedMachineConfiguration"), text(c.embedded_machine_configuration)))
    if c.extra_kernel_args:
        custom.append((key("extraKernelArgs"), strings(c.extra_kernel_args)))
    if c.meta:
        items: list[_Node] = [
            _Map([(key("key"), _Scalar(str(m.key), _PLAIN)), (key("value"), text(m.value))]) for m in c.meta
        ]
        custom.append((key("meta"), _Seq(items)))
    if c.official_extensions:
        extensions = _Map([(key("officialExtensions"), strings(c.official_extensions))])
        custom.append((key("systemExtensions"), extensions))
    if c.bootloader and c.bootloader != "none":
        custom.append((key("bootloader"), text(c.bootloader)))
    if not c.secureboot.is_empty:
        sb: list[tuple[_Node, _Node]] = []
        if c.secureboot.enroll_keys:
            sb.append((key("enrollKeys"), text(c.secureboot.enroll_keys)))
        if c.secureboot.include_well_known_certificates:
            sb.append((key("includeWellKnownCertificates"), _Scalar("true", _PLAIN)))
        custom.append((key("secureboot"), _Map(sb)))
    if c.sector_size:
        custom.append((key("diskImage"), _Map([(key("sectorSize"), _Scalar(str(c.sector_size), _PLAIN))])))
    root.append((key("customization"), _Map(custom)))
    return _Map(root)


# ---------------------------------------------------------------------------------------------------------
# Emission (libyaml emitter semantics for block style, unlimited width, indent 4, indented sequences)

_BREAKS = frozenset("\r\n\x85\u2028\u2029")
_FIRST_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")
_ESCAPES = {
    "\x00": "0", "\x07": "a", "\x08": "b", "\t": "t", "\n": "n", "\x0b": "v", "\x0c": "f", "\r": "r",
    "\x1b": "e", '"': '"', "\\": "\\", "\x85": "N", "\xa0": "_", "\u2028": "L", "\u2029": "P",
}  # fmt: skip
_INDENT = 4

# Where a node sits; decides indentation and scalar-style restrictions.
_ROOT, _SEQ_ITEM, _SIMPLE_KEY, _COMPLEX_KEY, _VALUE = range(5)


@dataclass(slots=True)
class _Analysis:
    multiline: bool
    block_plain: bool
    single_quoted: bool
    block: bool


_BREAK_CHARS = "\r\n\x85\u2028\u2029"
_RE_BREAK = re.compile(f"[{_BREAK_CHARS}]")
_RE_BREAK_SPLIT = re.compile(f"([{_BREAK_CHARS}])")
_RE_BREAK_SPACE = re.compile(f"[{_BREAK_CHARS}] ")
_RE_SPACE_BREAK = re.compile(f" [{_BREAK_CHARS}]")
# Not printable for libyaml (tab is tracked separately): C0/C1 controls, surrogates, U+FEFF, U+FFFE/F, astral.
_RE_SPECIAL = re.compile(r"[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
# Characters a double-quoted scalar escapes: the non-printable ones, every line break, quote and backslash.
_RE_DQ_ESCAPE = re.compile(r'[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd]|["\\\u2028\u2029]')
_RE_COLON_INDICATOR = re.compile(r":(?:[ \t]|\Z)")
_RE_COMMENT_INDICATOR = re.compile(f"[ \t\x00{_BREAK_CHARS}]#")


def _analyze(value: str) -> _Analysis:
    """libyaml ``analyze_scalar`` (block context only: the emitter never writes non-empty flow nodes).

    Evaluated with regular expressions instead of libyaml's character loop so long values stay cheap.
    """
    if not value:
        return _Analysis(False, True, True, False)
    first = value[0]
    indicators = bool(
        value.startswith(("---", "..."))
        or first in _FIRST_INDICATORS
        or (first in "?-" and (len(value) == 1 or value[1] in " \t"))
        or _RE_COLON_INDICATOR.search(value)
        or _RE_COMMENT_INDICATOR.search(value)
    )
    line_breaks = _RE_BREAK.search(value) is not None
    tabs = "\t" in value
    special = _RE_SPECIAL.search(value) is not None
    break_space = line_breaks and _RE_BREAK_SPACE.search(value) is not None
    space_break = line_breaks and _RE_SPACE_BREAK.search(value) is not None
    edges = first in " " + _BREAK_CHARS or value[-1] in " " + _BREAK_CHARS
    block_plain = not (edges or break_space or space_break or tabs or special or line_breaks or indicators)
    single_quoted = not (break_space or space_break or tabs or special)
    block = not (value[-1] == " " or space_break or special)
    return _Analysis(line_breaks, block_plain, single_quoted, block)


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    short = _ESCAPES.get(ch)
    if short is not None:
        return "\\" + short
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


class _Emitter:
    """Tracks libyaml's column / whitespace / indention state, which is what decides line breaks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.column = 0
        self.whitespace = True
        self.indention = True
        self.indent = -1
        self.indents: list[int] = []

    # -- low-level writers ---------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.column += len(text)

    def put_break(self) -> None:
        self.parts.append("\n")
        self.column = 0
        self.indention = True

    def write_break_char(self, ch: str) -> None:
        if ch == "\n":
            self.put_break()
        else:  # CR, NEL, LS, PS are copied as they are
            self.parts.append(ch)
            self.column = 0
            self.indention = True

    def write_indent(self) -> None:
        indent = max(self.indent, 0)
        if not self.indention or self.column > indent or (self.column == indent and not self.whitespace):
            self.put_break()
        if self.column < indent:
            self.write(" " * (indent - self.column))
        self.whitespace = True

    def write_indicator(
        self, indicator: str, need_whitespace: bool, is_whitespace: bool, is_indention: bool
    ) -> None:
        if need_whitespace and not self.whitespace:
            self.write(" ")
        self.write(indicator)
        self.whitespace = is_whitespace
        self.indention = self.indention and is_indention

    def increase_indent(self, flow: bool, in_sequence_item: bool) -> None:
        self.indents.append(self.indent)
        if self.indent < 0:
            self.indent = _INDENT if flow else 0
        elif in_sequence_item:
            self.indent += 2  # the first indent inside a sequence item just skips "- "
        else:
            self.indent = _INDENT * ((self.indent + _INDENT) // _INDENT)

    # -- nodes ---------------------------------------------------------------------------------------------

    def document(self, node: _Node) -> str:
        self.node(node, _ROOT)
        self.indent = -1
        self.write_indent()
        return "".join(self.parts)

    def node(self, node: _Node, where: int) -> None:
        if isinstance(node, _Scalar):
            self.scalar(node, where)
        elif isinstance(node, _Map):
            if not node.pairs:
                self.write_indicator("{", True, True, False)
                self.write_indicator("}", False, False, False)
            else:
                self.mapping(node, where == _SEQ_ITEM)
        elif not node.items:
            self.write_indicator("[", True, True, False)
            self.write_indicator("]", False, False, False)
        else:
            self.sequence(node, where == _SEQ_ITEM)

    def mapping(self, node: _Map, in_sequence_item: bool) -> None:
        self.increase_indent(False, in_sequence_item)
        for key, value in node.pairs:
            self.write_indent()
            if self.simple_key(key):
                self.node(key, _SIMPLE_KEY)
                self.write_indicator(":", False, False, False)
            else:
                self.write_indicator("?", True, False, True)
                self.node(key, _COMPLEX_KEY)
                self.write_indent()
                self.write_indicator(":", True, False, True)
            self.node(value, _VALUE)
        self.indent = self.indents.pop()

    def sequence(self, node: _Seq, in_sequence_item: bool) -> None:
        self.increase_indent(False, in_sequence_item)
        for item in node.items:
            self.write_indent()
            self.write_indicator("-", True, False, True)
            self.node(item, _SEQ_ITEM)
        self.indent = self.indents.pop()

    @staticmethod
    def simple_key(key: _Node) -> bool:
        """libyaml check_simple_key: one line and at most 128 bytes, else the ``? key`` form."""
        if isinstance(key, _Scalar):
            return _RE_BREAK.search(key.text) is None and len(key.text.encode()) <= 128
        if isinstance(key, _Map):
            return not key.pairs
        return not key.items

    def scalar(self, node: _Scalar, where: int) -> None:
        value, style = node.text, node.style
        info = _analyze(value)
        simple_key = where == _SIMPLE_KEY
        if simple_key and info.multiline:
            style = _DOUBLE
        if style == _PLAIN and (not info.block_plain or (not value and simple_key)):
            style = _SINGLE
        if style == _SINGLE and not info.single_quoted:
            style = _DOUBLE
        if style == _LITERAL and (not info.block or simple_key):
            style = _DOUBLE
        self.increase_indent(True, where == _SEQ_ITEM)
        if style == _PLAIN:
            if value and not self.whitespace:
                self.write(" ")
            self.write(value)
            if value:
                self.whitespace = False
            self.indention = False
        elif style == _SINGLE:
            self.single_quoted(value)
        elif style == _DOUBLE:
            self.double_quoted(value)
        else:
            self.literal(value)
        self.indent = self.indents.pop()

    def single_quoted(self, value: str) -> None:
        self.write_indicator("'", True, False, False)
        breaks = False
        for part in _RE_BREAK_SPLIT.split(value):
            if not part:
                continue
            if part in _BREAKS:
                if not breaks and part == "\n":
                    self.put_break()
                self.write_break_char(part)
                breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.write(part.replace("'", "''"))
                self.indention = False
                breaks = False
        self.write_indicator("'", False, False, False)
        self.whitespace = False
        self.indention = False

    def double_quoted(self, value: str) -> None:
        self.write_indicator('"', True, False, False)
        if value.startswith("\ufeff"):
            # libyaml tests for a BOM at the start of the *value*, so a leading U+FEFF escapes everything.
            self.write("".join(_escape(m) for m in re.finditer(r"(?s).", value)))
        else:
            self.write(_RE_DQ_ESCAPE.sub(_escape, value))
        self.write_indicator('"', False, False, False)
        self.whitespace = False
        self.indention = False

    def literal(self, value: str) -> None:
        self.write_indicator("|", True, False, False)
        if value.startswith(" "):
            self.write_indicator(str(_INDENT), False, False, False)
        if value[-1] not in _BREAKS:
            chomp = "-"
        elif len(value) == 1 or value[-2] in _BREAKS:
            chomp = "+"
        else:
            chomp = ""
        if chomp:
            self.write_indicator(chomp, False, False, False)
        self.put_break()
        self.whitespace = True
        breaks = True
        for part in _RE_BREAK_SPLIT.split(value):
            if not part:
                continue
            if part in _BREAKS:
                self.write_break_char(part)
                breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.write(part)
                self.indention = False
                breaks = False


# ---------------------------------------------------------------------------------------------------------
# Public API


def marshal(s: Schematic, *, legacy_quotes: bool = False) -> bytes:
    """The canonical YAML of a schematic, as go-yaml v4 ``yaml.Marshal`` writes it.

    ``legacy_quotes=True`` double-quotes YAML-1.1 booleans (``off``, ``yes``…), base-60 numbers and ``<<``
    the way yaml.v3 / go-yaml v4 up to rc.4 did (image-factory ≤ v1.4.0); the default follows current
    upstream (go-yaml ≥ rc.5), which single-quotes them. Nothing else differs between the two.
    """
    return _Emitter().document(_schematic_node(s, legacy_quotes)).encode("utf-8")


def schematic_id(s: Schematic, *, legacy_quotes: bool = False) -> str:
    """Upstream's schematic ID: lowercase hex sha256 of :func:`marshal`."""
    return hashlib.sha256(marshal(s, legacy_quotes=legacy_quotes)).hexdigest()


def marshal_value(value: Any, *, legacy_quotes: bool = False) -> bytes:
    """Any str/int/float/bool/None/list/dict (and :class:`GoTime`) value as a go-yaml v4 ``Marshal`` document.

    Maps are sorted with go-yaml's natural key order; ints must fit Go's int64/uint64.
    """
    return _Emitter().document(_value_node(value, legacy_quotes)).encode("utf-8")
