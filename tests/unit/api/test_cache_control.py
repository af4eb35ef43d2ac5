"""How long caches may keep the factory's answers (``api.rendering``): a redirect never outlives its
presigned URL, and ``If-Range`` only keeps a range for the client's own copy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.rendering import ASSET_MAX_AGE, REDIRECT_MARGIN, _if_range_holds, redirect_cache_control


@pytest.mark.parametrize(
    ("valid_for", "expected"),
    [
        (3600.0, f"public, max-age={3600 - REDIRECT_MARGIN}"),  # a fresh URL of the default hour
        (7 * 86400.0, f"public, max-age={ASSET_MAX_AGE}"),  # never longer than the bytes themselves
        (REDIRECT_MARGIN + 10.5, "public, max-age=10"),
        (REDIRECT_MARGIN + 0.5, "no-store"),  # about to expire: a stored copy would send clients to a 403
        (5.0, "no-store"),
        (-1.0, "no-store"),
    ],
)
def test_redirect_max_age_ends_before_the_url_does(valid_for: float, expected: str) -> None:
    assert redirect_cache_control(valid_for) == expected


KEY = "a" * 64
MODIFIED = datetime(2026, 12, 7, 3, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "holds"),
    [
        (None, True),
        (f'"{KEY}"', True),
        (f'W/"{KEY}"', False),  # a weak tag never matches (RFC 9110 §13.1.5)
        ('"other"', False),
        ("Mon, 07 Dec 2026 03:00:00 GMT", True),  # HTTP dates have no sub-second part
        ("Mon, 07 Dec 2026 04:00:00 GMT", False),  # only the exact Last-Modified
        ("Mon, 07 Dec 2026 02:59:59 GMT", False),
        ("not a date", False),
    ],
)
def test_if_range(header: str | None, holds: bool) -> None:
    assert _if_range_holds(header, KEY, MODIFIED) is holds


def test_if_range_date_without_last_modified_never_holds() -> None:
    assert _if_range_holds("Mon, 07 Dec 2026 03:00:00 GMT", KEY, None) is False
