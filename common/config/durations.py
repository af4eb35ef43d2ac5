"""Go ``time.Duration`` text, because upstream configs are written that way (``5m0s``, ``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse like Go's ``time.ParseDuration``; raises ValueError with Go's wording."""
    s = text.strip()
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return timedelta(0)
    pos = 0
    total_ns = 0.0
    while pos < len(s):
        m = _COMPONENT.match(s, pos)
        if m is None:
            num = re.match(r"(\d+\.?\d*|\.\d+)([^\d.]*)", s[pos:])
            if num and num.group(2):
                raise ValueError(f'time: unknown unit "{num.group(2)}" in duration "{text}"')
            if num:
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total_ns += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    return timedelta(microseconds=sign * total_ns / 1000)


def _fmt_frac(value: int, digits: int) -> str:
    """Integer part and trimmed fraction, as Go's fmtFrac/fmtInt do."""
    whole, frac = divmod(value, 10**digits)
    frac_text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def format_duration(delta: timedelta) -> str:
    """Format like Go's ``Duration.String`` (``1h30m0s``, ``500ms``, ``0s``)."""
    ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        if ns < 1_000:
            return f"{sign}{ns}ns"
        if ns < 1_000_000:
            return f"{sign}{_fmt_frac(ns, 3)}µs"
        return f"{sign}{_fmt_frac(ns, 6)}ms"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    seconds = _fmt_frac(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"
