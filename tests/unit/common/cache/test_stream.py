"""Ranged blob reads: 206 and registries that ignore Range, and the response is released when closed."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
import requests
import responses

from common.cache.base import CHUNK
from common.cache.oci import OCIAsset, range_length
from common.config.options import RepositoryOptions
from common.errors import UnavailableError
from common.registry.client import RegistryClient, RegistryError

DATA = bytes(range(256)) * 10000 + b"tail"  # 2.4 MiB: several chunks
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REPO = RepositoryOptions(registry="registry.test", namespace="ns", repository="cache", insecure=True)
URL = f"http://registry.test/v2/ns/cache/blobs/{DIGEST}"


def _ranged(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
    header = request.headers.get("Range")
    if not header:
        return 200, {}, DATA
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
    assert match
    start = int(match[1])
    end = int(match[2]) if match[2] else len(DATA) - 1
    return 206, {"Content-Range": f"bytes {start}-{end}/{len(DATA)}"}, DATA[start : end + 1]


def _ignoring_range(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, DATA


def asset(client: RegistryClient, size: int = len(DATA)) -> OCIAsset:
    return OCIAsset(client=client, manifest_digest="sha256:" + "0" * 64, layer_digest=DIGEST, size=size)


CASES = [(0, None), (0, 1), (1, 10), (CHUNK - 1, 2), (CHUNK, CHUNK + 5), (len(DATA) - 4, None), (5, 10**9)]


@pytest.mark.parametrize("callback", [_ranged, _ignoring_range])
@responses.activate
def test_ranges(callback: Any) -> None:
    responses.add_callback(responses.GET, URL, callback=callback)
    target = asset(RegistryClient(REPO))
    for start, length in CASES:
        chunks = list(target.read(start, length))
        assert all(0 < len(c) <= CHUNK for c in chunks)
        end = None if length is None else start + length
        assert b"".join(chunks) == DATA[start:end], (start, length)
    # empty ranges make no request
    calls = len(responses.calls)
    assert list(target.read(len(DATA))) == []
    assert list(target.read(3, 0)) == []
    assert len(responses.calls) == calls


@responses.activate
def test_range_header_sent() -> None:
    responses.add_callback(responses.GET, URL, callback=_ranged)
    list(asset(RegistryClient(REPO)).read(10, 20))
    assert responses.calls[0].request.headers["Range"] == "bytes=10-29"


@responses.activate
def test_full_read_is_digest_checked() -> None:
    responses.add(responses.GET, URL, body=DATA[:-1] + b"X")
    with pytest.raises(RegistryError, match="corrupt"):
        b"".join(asset(RegistryClient(REPO)).read())


@responses.activate
def test_closing_the_iterator_closes_the_response(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.add(responses.GET, URL, body=DATA)
    closed: list[bool] = []
    original = requests.Response.close

    def close(self: requests.Response) -> None:
        closed.append(True)
        original(self)

    monkeypatch.setattr(requests.Response, "close", close)
    for reader in (asset(RegistryClient(REPO)).read(), asset(RegistryClient(REPO)).read(5, 2 * CHUNK)):
        assert len(next(reader)) > 0
        assert not closed
        reader.close()  # type: ignore[attr-defined]
        assert closed
        closed.clear()


@responses.activate
def test_connection_errors_while_streaming_are_unavailable() -> None:
    responses.add(responses.GET, URL, body=requests.ConnectionError("reset"))
    with pytest.raises(UnavailableError):
        list(asset(RegistryClient(REPO)).read(1, 5))


def test_range_length() -> None:
    assert range_length(0, None, 10) == 10
    assert range_length(4, 100, 10) == 6
    assert range_length(12, None, 10) == 0
    with pytest.raises(ValueError):
        range_length(-1, None, 10)
    with pytest.raises(ValueError):
        range_length(0, -1, 10)
