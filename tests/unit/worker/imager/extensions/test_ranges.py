"""blang/semver v4 range semantics (cases from its range_test.go plus upstream's trim)."""

from __future__ import annotations

import pytest
import semver

from worker.imager.extensions import ranges
from worker.imager.extensions.ranges import parse_range


def _v(text: str) -> semver.Version:
    return semver.Version.parse(text)


@pytest.mark.parametrize(
    ("constraint", "cases"),
    [
        (">1.2.3", {"1.2.2": False, "1.2.3": False, "1.2.4": True}),
        (">=1.2.3", {"1.2.3": True, "1.2.4": True, "1.2.2": False}),
        ("<1.2.3", {"1.2.2": True, "1.2.3": False, "1.2.4": False}),
        ("<=1.2.3", {"1.2.2": True, "1.2.3": True, "1.2.4": False}),
        ("1.2.3", {"1.2.2": False, "1.2.3": True, "1.2.4": False}),
        ("=1.2.3", {"1.2.2": False, "1.2.3": True}),
        ("==1.2.3", {"1.2.3": True, "1.2.4": False}),
        ("!=1.2.3", {"1.2.2": True, "1.2.3": False, "1.2.4": True}),
        ("!1.2.3", {"1.2.3": False, "1.2.4": True}),
        (">1.2.2 <1.2.4", {"1.2.2": False, "1.2.3": True, "1.2.4": False}),
        (">1.2.2 <1.2.5 !=1.2.4", {"1.2.3": True, "1.2.4": False, "1.2.5": False}),
        (">1.2.2 || <1.2.4", {"1.2.2": True, "1.2.3": True, "1.2.4": True}),
        ("<1.2.2 || >1.2.4", {"1.2.2": False, "1.2.3": False, "1.2.4": False}),
        (">1.x", {"1.9.0": False, "2.0.0": True}),
        (">1.2.x", {"1.2.6": False, "1.3.0": True}),
        ("1.x || >=2.0.x <2.2.x", {"0.9.2": False, "1.2.2": True, "2.1.8": True, "2.2.0": False}),
        (">1.2.2 <1.2.4 || >=2.0.0 <3.0.0", {"1.2.3": True, "2.9.9": True, "3.0.0": False}),
        ("  >=   1.2.3   <=  1.2.3   ", {"1.2.3": True, "1.2.4": False}),
        # blang's quirk: != with a wildcard ANDs "<1.2.0" and ">=1.3.0", which nothing satisfies
        ("!=1.2.x", {"1.1.9": False, "1.2.5": False, "1.3.0": False}),
        ("<=1.x", {"1.99.0": True, "2.0.0": False}),
        # blang's quirk: "1.x.x" counts as a patch wildcard, so <=1.x.x means <1.1.0
        ("<=1.x.x", {"1.0.9": True, "1.1.0": False}),
        # pre-releases of the bound sort before it
        (">= 1.10.0-alpha.0", {"1.10.0": True, "1.9.9": False}),
        ("< 1.10.0-beta.1", {"1.10.0": False, "1.9.0": True}),
    ],
)
def test_parse_range(constraint: str, cases: dict[str, bool]) -> None:
    matches = parse_range(constraint)
    assert {v: matches(_v(v)) for v in cases} == cases


@pytest.mark.parametrize(
    "constraint",
    [">>1.2.3", "1.0", "string", "", "   ", "fo.ob.ar.x", "|| 1.0.0", "1.0.0 ||", "~1.2.3", "1.2.3\n"],
)
def test_parse_range_errors(constraint: str) -> None:
    with pytest.raises(ranges.RangeError):
        parse_range(constraint)


def test_single_character_parts_are_dropped_like_blang() -> None:
    assert ranges._split_and_trim("1.2.3 1.2.3") == ["1.2.3", "1.2.3"]
    assert ranges._split_and_trim("1.2.3 || >=1.2.3 <1.2.3") == ["1.2.3", "||", ">=1.2.3", "<1.2.3"]
    assert ranges._split_and_trim(">=1.0.0 x") == [">=1.0.0"]


@pytest.mark.parametrize(
    ("raw", "trimmed"),
    [(">= v1.10.0", ">= 1.10.0"), ("vv1.2.3", "v1.2.3"), (">=v1.0.0 <v2.0.0", ">=1.0.0 <2.0.0"), ("v", "v")],
)
def test_trim_v(raw: str, trimmed: str) -> None:
    assert ranges.trim_v(raw) == trimmed
