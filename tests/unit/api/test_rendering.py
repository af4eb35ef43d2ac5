"""Pure parts of delivery: Range parsing, who may be redirected, and streaming a cached asset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from flask import Flask, Response, request

from api.rendering import Primed, asset_response, parse_range, redirect_allowed
from common.config import load_config
from common.errors import UnavailableError

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
        ("bytes=0-1,5-6", None),  # several ranges apart: served whole, never multipart
        ("items=0-1", None),
        ("bytes=-", None),
        # Overlapping and adjacent ranges merge into one.
        ("bytes=0-10,5-20", (0, 21)),
        ("bytes=0-9,10-19", (0, 20)),
        ("bytes=10-19, 0-9", (0, 20)),
        ("bytes=0-99,0-99,0-99", (0, 100)),
        ("bytes=-100,900-", (900, 100)),
        ("bytes=0-,0-", (0, 1000)),
        ("bytes=0-0,-1", None),
        ("BYTES = 0-9", (0, 10)),  # the unit is case-insensitive
        ("bytes=0-9,,", (0, 10)),  # empty list elements do not count
        # Unsatisfiable ranges are dropped; none left → 416.
        ("bytes=5000-6000,0-9", (0, 10)),
        ("bytes=5000-6000,1000-", False),
        # Huge positions clamp to the end, without converting thousands of digits.
        ("bytes=0-" + "9" * 5000, (0, 1000)),
        ("bytes=-" + "9" * 5000, (0, 1000)),
        ("bytes=" + "9" * 5000 + "-", False),
        ("bytes=" + "9" * 30 + "-" + "9" * 29, None),  # last < first: malformed
        ("bytes=" + "0" * 40 + "5-9", (5, 5)),
        # Malformed anywhere: the header is ignored.
        ("bytes=0-9,x", None),
        ("bytes=0-9,5-1", None),
        ("bytes=0x1-5", None),
        ("bytes=\u0661-5", None),  # a non-ASCII digit
        ("bytes=+1-5", None),
        ("bytes=1-5-9", None),
        ("bytes", None),
        ("bytes=", None),
        ("bytes=,", None),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, SIZE) == expected


def test_parse_range_bounds_the_number_of_ranges() -> None:
    assert parse_range(",".join(["bytes=0-0"] + ["0-0"] * 15), SIZE, 16) == (0, 1)
    assert parse_range(",".join(["bytes=0-0"] + ["0-0"] * 16), SIZE, 16) is False
    assert parse_range("bytes=0-1,2-3", SIZE, 1) is False
    # Thousands of ranges (as many as fit in one header field) are refused before any is read.
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(2000))
    started = time.perf_counter()
    assert parse_range(header, SIZE, 16) is False
    assert time.perf_counter() - started < 0.05
    # Even malformed ones: too many is too many.
    assert parse_range("bytes=" + ",".join(["x"] * 100), SIZE, 16) is False


def test_parse_range_is_fast_on_the_largest_header() -> None:
    started = time.perf_counter()
    for header in ("bytes=" + "1" * 8000 + "-", "bytes=0-" + "9" * 8000, "bytes=" + ",".join(["0-999"] * 16)):
        parse_range(header, SIZE, 16)
    assert time.perf_counter() - started < 0.05


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


class _Asset:
    """An asset whose backend fails on the first read (``fail``) or serves ``chunks``."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.size = sum(map(len, chunks))
        self.closed = False
        self.reads = 0

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        def stream() -> Iterator[bytes]:
            self.reads += 1
            try:
                if self.fail is not None:
                    raise self.fail
                yield from self.chunks
            finally:
                self.closed = True

        return stream()

    def redirect_url(self, filename: str) -> str | None:
        return None


def respond(asset: _Asset) -> Response:
    delivery = SimpleNamespace(services=_Services(), redirect_url=lambda *a: None)
    app = Flask("t")
    with app.test_request_context("/image/x", headers={"User-Agent": "curl/8"}):
        return asset_response(
            delivery,  # type: ignore[arg-type]
            asset,  # type: ignore[arg-type]
            request,
            key="k" * 64,
            filename="kernel-amd64",
            content_type="application/octet-stream",
        )


def test_unreachable_backend_fails_inside_the_handler_not_after_it() -> None:
    """Read lazily, the first chunk's error would reach gunicorn only after the handler returned
    (its HTML 500); read at once, it is the handler's 503."""
    asset = _Asset([b"x"], fail=UnavailableError("registry r is unavailable: ConnectionError"))
    with pytest.raises(UnavailableError):
        respond(asset)
    assert asset.reads == 1


def test_primed_stream_serves_every_byte_and_closes_the_backend() -> None:
    asset = _Asset([b"ab", b"", b"cd"])
    response = respond(asset)
    assert asset.reads == 1  # the first chunk is read already
    assert b"".join(response.response) == b"abcd"  # type: ignore[arg-type]
    assert asset.closed

    early = _Asset([b"ab", b"cd"])
    stream = Primed(early.read())
    assert next(stream) == b"ab"
    stream.close()  # a client that went away: the backend connection is released
    assert early.closed
    assert list(Primed(iter(()))) == []
