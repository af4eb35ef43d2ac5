"""Pure parts of delivery: Range parsing and who may be redirected."""

from __future__ import annotations

import pytest
from flask import Flask, request

from api.rendering import parse_range, redirect_allowed
from common.config import load_config

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 900)),
        ("bytes=-10", (990, 10)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 10)),
        ("bytes=1000-", False),
        ("bytes=-0", False),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),  # several ranges: served whole
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, SIZE) == expected


class _Services:
    def __init__(self, **options: object) -> None:
        environ = {f"IF_{k.upper().replace('.', '_')}": str(v) for k, v in options.items()}
        self.config = load_config([], environ=environ)


def allowed(
    method: str = "GET", host: str = "factory.example", ua: str = "curl/8", **options: object
) -> bool:
    app = Flask("t")
    with app.test_request_context("/image/x", method=method, headers={"Host": host, "User-Agent": ua}):
        return redirect_allowed(request, _Services(**options))  # type: ignore[arg-type]


def test_redirect_rules() -> None:
    main = {"http.externalURL": "https://factory.example/"}
    two_hosts = {**main, "http.externalPXEURL": "http://pxe.factory.example/"}
    assert allowed(**main)
    assert not allowed("HEAD", **main)
    # Upstream's gotcha: with no PXE host configured, upstream never redirects; we do.
    assert allowed(host="factory.example", **main)
    assert allowed(host="factory.example", **two_hosts)
    assert not allowed(host="pxe.factory.example", **two_hosts)
    assert not allowed(ua="iPXE/1.21.1", **main)
    assert allowed(host="pxe.factory.example", **two_hosts, **{"cache.redirectPXE": "true"})
    assert allowed(ua="iPXE/1.21.1", **main, **{"cache.redirectPXE": "true"})
    assert not allowed("HEAD", ua="iPXE/1.21.1", **main, **{"cache.redirectPXE": "true"})
