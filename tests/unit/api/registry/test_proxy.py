"""Pure parts of the registry proxy: the scheme rule, which headers cross, Link/Location rewriting."""

from __future__ import annotations

import io

import pytest
import requests
import urllib3
from flask import Flask, request

from api.registry import proxy


@pytest.mark.parametrize(
    ("registry", "insecure", "scheme"),
    [
        ("ghcr.io", False, "https"),
        ("ghcr.io", True, "http"),
        ("registry.example.com:5000", False, "https"),
        ("localhost:5000", False, "http"),
        ("localhost", False, "https"),  # go-containerregistry: only "localhost:" is a prefix match
        ("127.0.0.1", False, "http"),
        ("127.0.0.1:5000", False, "http"),
        ("[::1]:5000", False, "http"),
        ("10.1.2.3:5000", False, "http"),
        ("172.16.0.1", False, "http"),
        ("172.31.255.255:443", False, "http"),
        ("172.32.0.1", False, "https"),
        ("192.168.1.10:5000", False, "http"),
        ("192.169.1.10", False, "https"),
        ("8.8.8.8:5000", False, "https"),
        ("registry.local", False, "http"),
        ("registry.local:5000", False, "http"),
        ("registry.localhost:5000", False, "http"),
        ("registry.locality.io", False, "https"),
    ],
)
def test_registry_scheme_follows_go_containerregistry(registry: str, insecure: bool, scheme: str) -> None:
    assert proxy.registry_scheme(registry, insecure) == scheme
    assert proxy.registry_base_url(registry, insecure) == f"{scheme}://{registry}"


def test_request_headers_are_an_allow_list() -> None:
    sent = proxy.request_headers(
        [
            ("Host", "factory.example.com"),
            ("Authorization", "Bearer factory-token"),
            ("Proxy-Authorization", "Basic x"),
            ("Cookie", "session=1"),
            ("Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Accept", "application/vnd.oci.image.index.v1+json"),
            ("accept", "application/vnd.oci.image.manifest.v1+json"),
            ("Range", "bytes=0-99"),
            ("If-None-Match", '"sha256:abc"'),
            ("User-Agent", "skopeo/1.9"),
            ("Accept-Encoding", "gzip"),
        ]
    )
    assert sent == {
        "Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        "Range": "bytes=0-99",
        "If-None-Match": '"sha256:abc"',
        "User-Agent": "skopeo/1.9",
        "Accept-Encoding": "identity",
    }


UPSTREAM = "http://127.0.0.1:5000/v2/fixture/siderolabs/imager/tags/list?n=2"
CLIENT = "/v2/siderolabs/imager/tags/list"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (
            '</v2/fixture/siderolabs/imager/tags/list?last=v1.12.4&n=2>; rel="next"',
            '</v2/siderolabs/imager/tags/list?last=v1.12.4&n=2>; rel="next"',
        ),
        (
            '<http://127.0.0.1:5000/v2/fixture/siderolabs/imager/tags/list?last=b&n=2>; rel="next"',
            '</v2/siderolabs/imager/tags/list?last=b&n=2>; rel="next"',
        ),
        # another origin, or outside the proxied repository: left alone
        ('<https://elsewhere.example/v2/x/tags/list?last=b>; rel="next"',) * 2,
        ('</v2/other/tags/list?last=b>; rel="next"',) * 2,
    ],
)
def test_link_rewritten_to_our_path(link: str, expected: str) -> None:
    assert proxy.rewrite_link(link, UPSTREAM, CLIENT) == expected


def test_link_without_namespace() -> None:
    upstream = "https://ghcr.io/v2/siderolabs/imager/tags/list"
    link = '</v2/siderolabs/imager/tags/list?last=v1&n=1>; rel="next"'
    assert proxy.rewrite_link(link, upstream, CLIENT) == link


def test_response_headers_selection_and_location() -> None:
    upstream = "http://127.0.0.1:5000/v2/fixture/siderolabs/imager/blobs/sha256:abc"
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": "10",
        "Docker-Content-Digest": "sha256:abc",
        "Etag": '"sha256:abc"',
        "Location": "/storage/abc?sig=1",
        "Set-Cookie": "a=b",
        "Www-Authenticate": 'Bearer realm="x"',
        "Connection": "close",
        "Transfer-Encoding": "chunked",
        "Server": "registry",
        "Oci-Filters-Applied": "artifactType",
    }
    assert proxy.response_headers(headers, upstream, "/v2/siderolabs/imager/blobs/sha256:abc") == {
        "Content-Type": "application/octet-stream",
        "Content-Length": "10",
        "Docker-Content-Digest": "sha256:abc",
        "ETag": '"sha256:abc"',
        "Location": "http://127.0.0.1:5000/storage/abc?sig=1",
        "OCI-Filters-Applied": "artifactType",
    }
    absolute = {"Location": "https://s3.example/bucket/abc?X-Amz-Signature=1"}
    assert proxy.response_headers(absolute, upstream, "/x") == absolute


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:siderolabs/imager:pull"',
            {
                "realm": "https://ghcr.io/token",
                "service": "ghcr.io",
                "scope": "repository:siderolabs/imager:pull",
            },
        ),
        ('bearer realm="https://auth.example/token"', {"realm": "https://auth.example/token"}),
        ('Basic realm="registry"', None),
        ("Bearer service=x", None),
        ("", None),
    ],
)
def test_bearer_challenge(header: str, expected: dict[str, str] | None) -> None:
    assert proxy.bearer_challenge(header) == expected


def test_redirect_is_an_empty_307() -> None:
    resp = proxy.redirect("https://ghcr.io/v2/siderolabs/installer/abc/manifests/sha256:1")
    assert resp.status_code == 307
    assert resp.headers["Location"] == "https://ghcr.io/v2/siderolabs/installer/abc/manifests/sha256:1"
    assert resp.get_data() == b""
    assert "Content-Type" not in resp.headers


def _answer(status: int, body: bytes, headers: dict[str, str]) -> requests.Response:
    """A backing-registry answer as requests hands it over (``stream=True``), from bytes."""
    answer = requests.Response()
    answer.status_code = status
    answer.headers.update(headers)
    answer.raw = urllib3.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False)
    return answer


def test_relay_streams_status_headers_and_body() -> None:
    app = Flask(__name__)
    body = bytes(range(256)) * 1024
    upstream = "http://127.0.0.1:5000/v2/ns/siderolabs/x/blobs/sha256:abc"
    with app.test_request_context("/v2/siderolabs/x/blobs/sha256:abc", method="GET"):
        resp = proxy.relay(
            request, _answer(200, body, {"Content-Length": str(len(body)), "Server": "x"}), upstream
        )
    assert resp.status_code == 200
    assert resp.is_streamed
    assert resp.headers["Content-Length"] == str(len(body))
    assert "Content-Type" not in resp.headers and "Server" not in resp.headers
    chunks = [bytes(c) for c in resp.iter_encoded()]
    assert b"".join(chunks) == body
    assert max(len(c) for c in chunks) <= proxy.CHUNK_SIZE


def test_relay_turns_a_remaining_401_into_503() -> None:
    app = Flask(__name__)
    answer = _answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="r"'})
    with app.test_request_context("/v2/siderolabs/x/manifests/v1", method="GET"):
        resp = proxy.relay(request, answer, "http://10.0.0.1:5000/v2/siderolabs/x/manifests/v1")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(proxy.RETRY_AFTER)
    assert resp.get_json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "WWW-Authenticate" not in resp.headers


def test_forward_refuses_other_methods() -> None:
    app = Flask(__name__)
    with app.test_request_context("/v2/siderolabs/x/manifests/v1", method="PUT"):
        resp = proxy.forward(request, "http://127.0.0.1:9/v2/siderolabs/x/manifests/v1")
    assert resp.status_code == 405
    assert resp.get_json()["errors"][0]["code"] == "UNSUPPORTED"
