"""Hostile HTTP against a real gunicorn: each refused fast with a clear 4xx, the server serving on.

Raw sockets, so that nothing normalises the request: oversized request lines and headers (gunicorn's
limits, ``http.maxRequestLine``/``maxHeaderFields``/``maxHeaderFieldSize``), slow-loris headers and
bodies (``http.requestReadTimeout``), path traversal and encoded separators in every path parameter,
``Range`` abuse (``http.maxRanges``) and ``?filename=`` injection.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from common.config.options import HTTPOptions
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
READ_TIMEOUT = 2.0  # http.requestReadTimeout in this stack
QUICK = 5.0  # every refusal comes well within this


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("hostile-http"),
        None,
        registry,
        fixture_release,
        apis=1,
        workers=1,
        **{"http.requestReadTimeout": "2s", "http.maxRanges": 16},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def asset(stack: Stack) -> tuple[str, bytes]:
    """A built, cached asset: its URL and its bytes."""
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=hostile-http\n")
    url = f"{stack.api.url}/image/{sid}/{VERSION}/cmdline-metal-amd64"
    response = requests.get(url, timeout=600)
    assert response.status_code == 200, response.text
    return url, response.content


def exchange(stack: Stack, raw: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes, float]:
    """Send ``raw`` on a new connection; the status, headers and body of the answer (read until the
    server closes or Content-Length is reached), and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.api.port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_response(sock, started)


def read_response(sock: socket.socket, started: float) -> tuple[int, dict[str, str], bytes, float]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body, time.monotonic() - started


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: factory.test", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def still_serving(stack: Stack) -> None:
    assert requests.get(f"{stack.api.url}/healthz", timeout=5).status_code == 200


# --- oversized request lines and headers: gunicorn answers before the app ------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/schematics/" + "a" * 5000), 414),
        (get("/healthz?" + "x" * 100_000), 414),
        (get("/healthz", *(f"X-H{i}: v" for i in range(150))), 431),
        (get("/healthz", "X-Big: " + "v" * 9000), 431),
        (get("/healthz", "Range: bytes=" + ",".join(["0-0"] * 5000)), 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=[
        "long path",
        "long query",
        "too many fields",
        "long field",
        "long range",
        "bad name",
        "nul",
        "nul path",
    ],
)
def test_oversized_or_malformed_requests_are_refused(stack: Stack, raw: bytes, status: int) -> None:
    got, _, _, elapsed = exchange(stack, raw)
    assert got == status and elapsed < QUICK
    still_serving(stack)


def test_request_line_within_the_limit_is_served(stack: Stack) -> None:
    got, _, _, _ = exchange(stack, get("/schematics/" + "a" * 4000))
    assert got in (400, 404)


# --- slow-loris ----------------------------------------------------------------------------------


def trickle(stack: Stack, head: bytes, drip: bytes, *, interval: float = 0.25) -> tuple[int, float]:
    """Send ``head``, then one byte of ``drip`` every ``interval`` s until the server answers or
    closes. The answer's status (0 for a bare close) and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.api.port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(interval)
        answer = b""
        for byte in drip:
            assert time.monotonic() - started < 3 * READ_TIMEOUT + QUICK, "the server is still reading"
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # closed on us
                break
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                continue
        sock.settimeout(10)
        while True:
            try:
                more = sock.recv(65536)
            except OSError:
                break
            if not more:
                break
            answer += more
        elapsed = time.monotonic() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
    return status, elapsed


def test_slow_headers_get_408_within_the_read_timeout(stack: Stack) -> None:
    status, elapsed = trickle(stack, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200)
    assert status == 408
    assert READ_TIMEOUT - 0.5 < elapsed < READ_TIMEOUT + QUICK
    still_serving(stack)


def test_slow_schematic_body_gets_408_within_the_read_timeout(stack: Stack) -> None:
    body = b"customization:\n  extraKernelArgs:\n    - slow=loris\n" + b"#" * 500
    head = (
        b"POST /schematics HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    status, elapsed = trickle(stack, head, body)
    assert status == 408
    assert READ_TIMEOUT - 0.5 < elapsed < READ_TIMEOUT + QUICK
    still_serving(stack)
    created = requests.post(f"{stack.api.url}/schematics", data=body, timeout=10)
    assert created.status_code == 201


def test_slow_loris_holds_no_thread(stack: Stack) -> None:
    """More slow clients than the process has threads: each is cut off at the bound, and a normal
    request meanwhile is answered at once."""
    threads = int(stack.config.get("http", {}).get("threads", HTTPOptions().threads))
    sockets = []
    try:
        for _ in range(threads + 4):
            sock = socket.create_connection(("127.0.0.1", stack.api.port), timeout=10)
            sock.sendall(b"POST /schematics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            sockets.append(sock)
        started = time.monotonic()
        still_serving(stack)
        assert time.monotonic() - started < QUICK
        time.sleep(READ_TIMEOUT + 1)
        for sock in sockets:
            sock.settimeout(QUICK)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408")
    finally:
        for sock in sockets:
            sock.close()
    still_serving(stack)


def test_a_prompt_keep_alive_client_is_not_cut_off(stack: Stack) -> None:
    """The bound is per request: a connection kept alive longer than it serves request after request."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.api.port), timeout=10) as sock:
        while time.monotonic() - started < READ_TIMEOUT + 1:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _, _ = read_response(sock, time.monotonic())
            assert status == 200
            time.sleep(0.5)


# --- path traversal and encoded separators -------------------------------------------------------

SID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"  # the empty schematic
HOSTILE_SEGMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    "..%2f..%2f..%2fetc%2fpasswd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5c..%5cetc%5cpasswd",
    "..\\..\\etc\\passwd",
    "%00",
    "a%00b",
    "%c0%ae%c0%ae",  # overlong UTF-8 for ".."
    "%252e%252e",  # double-encoded
    "%ff%fe",
    "x" * 3000,
]
ROUTES = [
    "/image/{}/" + VERSION + "/metal-amd64.iso",
    "/image/" + SID + "/{}/metal-amd64.iso",
    "/image/" + SID + "/" + VERSION + "/{}",
    "/pxe/{}/" + VERSION + "/metal-amd64",
    "/pxe/" + SID + "/{}/metal-amd64",
    "/pxe/" + SID + "/" + VERSION + "/{}",
    "/builds/{}",
    "/schematics/{}",
    "/v2/{}/manifests/latest",
    "/v2/siderolabs/{}/blobs/sha256:" + "0" * 64,
    "/v2/metal-installer/" + SID + "/manifests/{}",
    "/v2/{}",
]


@pytest.mark.parametrize("route", ROUTES)
def test_path_traversal_is_refused(stack: Stack, route: str) -> None:
    for segment in HOSTILE_SEGMENTS:
        path = route.format(segment)
        status, _, body, elapsed = exchange(stack, get(path))
        assert 400 <= status < 500, (path, status, body[:300])
        assert elapsed < QUICK, (path, elapsed)
        assert b"root:" not in body
    still_serving(stack)


#: A valid value for each path parameter of /openapi.json, per route prefix where it differs.
VALID = {
    "schematic": SID,
    "version": VERSION,
    "key": "0" * 64,
    "reference": "latest",
    "digest": "sha256:" + "0" * 64,
}
VALID_BY_ROUTE = {
    ("/image/", "path"): "metal-amd64.iso",
    ("/pxe/", "path"): "metal-amd64",
    ("/talosctl/", "path"): "talosctl-linux-amd64",
    ("/v2/siderolabs/", "image"): "imager",
    ("/v2/", "image"): "metal-installer",
}


def _templated_routes() -> list[tuple[str, str, str]]:
    """(method, path template, parameter) for every path parameter of every operation /openapi.json
    documents, so a route added later is covered without editing this test."""
    from api.openapi import document  # the same document the API serves (checked below)

    found = []
    for template, operations in document()["paths"].items():
        for parameter in re.findall(r"{(\w+)}", template):
            for method in ("get", "head"):
                if method in operations:
                    found.append((method.upper(), template, parameter))
    return found


def _fill(template: str, parameter: str, segment: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == parameter:
            return segment
        prefix = next((p for p, n in VALID_BY_ROUTE if n == name and template.startswith(p)), None)
        return VALID_BY_ROUTE[(prefix, name)] if prefix is not None else VALID[name]

    return re.sub(r"{(\w+)}", value, template)


def test_every_documented_path_parameter_refuses_traversal(stack: Stack) -> None:
    """Every path parameter of every route in /openapi.json, GET and HEAD: traversal, encoded
    separators (%2F, %5C, %2e%2e), backslashes and NUL are a quick 4xx, never a file's content."""
    served = requests.get(f"{stack.api.url}/openapi.json", timeout=10).json()
    routes = _templated_routes()
    assert {t for _, t, _ in routes} == {t for t in served["paths"] if "{" in t}
    for method, template, parameter in routes:
        for segment in HOSTILE_SEGMENTS:
            path = _fill(template, parameter, segment)
            raw = get(path).replace(b"GET ", method.encode() + b" ", 1)
            status, _, body, elapsed = exchange(stack, raw)
            assert 400 <= status < 500, (method, path[:300], status, body[:300])
            assert elapsed < QUICK, (method, path[:300], elapsed)
            assert b"root:" not in body
    still_serving(stack)


# --- Range abuse on a streamed asset -------------------------------------------------------------


def ranged(stack: Stack, url: str, value: str) -> tuple[int, dict[str, str], bytes, float]:
    path = url.removeprefix(stack.api.url)
    return exchange(stack, get(path, f"Range: {value}"))


def test_thousands_of_ranges_are_refused(stack: Stack, asset: tuple[str, bytes]) -> None:
    url, content = asset
    size = len(content)
    for value in (
        "bytes=" + ",".join(["0-0"] * 2000),  # as many as fit in one header field
        "bytes=" + ",".join(["0-"] * 17),  # just over http.maxRanges, all overlapping
    ):
        status, headers, body, elapsed = ranged(stack, url, value)
        assert status == 416 and headers["content-range"] == f"bytes */{size}"
        assert body == b"" and elapsed < QUICK
    still_serving(stack)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-9,5-19,0-4", (0, 19)),  # overlapping: merged into one part
        ("bytes=0-9,10-19", (0, 19)),  # adjacent: merged
        ("bytes=0-0,-1", None),  # apart: the whole asset, never multipart
        ("bytes=" + ",".join(["0-"] * 16), "all"),  # 16 whole-asset ranges: one asset's worth, once
        ("bytes=0-" + "9" * 4000, "all"),  # huge: clamped to the end
        ("bytes=-" + "9" * 4000, "all"),
        ("bytes=5-1", None),  # malformed: ignored
        ("bytes=x-y", None),
        ("bytes=0-1;2-3", None),
        ("pages=1-2", None),
        ("bytes=" + "9" * 4000 + "-", 416),
    ],
)
def test_range_answers_are_never_larger_than_the_asset(
    stack: Stack, asset: tuple[str, bytes], value: str, expected: object
) -> None:
    url, content = asset
    status, headers, body, elapsed = ranged(stack, url, value)
    assert elapsed < QUICK
    assert "multipart" not in headers.get("content-type", "")
    if expected == 416:
        assert status == 416
    elif expected is None:
        assert status == 200 and body == content
    else:
        start, end = (0, len(content) - 1) if expected == "all" else expected  # type: ignore[misc]
        assert status == 206 and body == content[start : end + 1]
        assert headers["content-range"] == f"bytes {start}-{end}/{len(content)}"
    assert len(body) <= len(content)


# --- ?filename= ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "fallback", "extended"),
    [
        ('../../etc/passwd"\r\nX-Injected: 1', "passwdX-Injected: 1", None),
        ("a;b=c.iso", "ab=c.iso", None),
        ("ü.iso", "_.iso", "%C3%BC.iso"),
        ("x" * 1000, "x" * 255, None),
        ("\u202egpj.exe", "gpj.exe", None),
    ],
    ids=["crlf", "semicolon", "unicode", "long", "rlo"],
)
def test_filename_cannot_inject(
    stack: Stack, asset: tuple[str, bytes], requested: str, fallback: str, extended: str | None
) -> None:
    url, content = asset
    path = url.removeprefix(stack.api.url) + "?filename=" + quote(requested, safe="")
    status, headers, body, elapsed = exchange(stack, get(path))
    assert status == 200 and body == content and elapsed < QUICK
    assert "x-injected" not in headers
    expected = f'attachment; filename="{fallback}"'
    if extended:
        expected += f"; filename*=UTF-8''{extended}"
    assert headers["content-disposition"] == expected
