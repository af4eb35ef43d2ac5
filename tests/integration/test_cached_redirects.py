"""Cached-asset redirects answered without Flask (``api.cached_redirects``) are the image route's own.

One stack in S3 mode builds one initramfs with an official extension. In this process an app
made from the stack's configuration answers the same request twice: first through Flask (which
makes the plan and the cache entry remembered), then from what it remembers. Both answers are
compared byte for byte, and so is what each adds to the metrics. A real client then follows the
remembered redirect; what the fast path must leave to Flask (HEAD, ``?filename=``, iPXE, checksum
paths, unknown assets) is left to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.cached_redirects import CachedRedirects
from common.config import load_config
from common.metrics.prometheus import PrometheusMetrics, generate_latest
from common.services import build_services
from devstack.release.release import Release
from devstack.services import RegistryServer, S3Server
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
ASSET = "initramfs-amd64.xz"  # with the extension (extension hits are counted for what carries them)
SCHEMATIC = (
    "customization:\n  extraKernelArgs: [test=cached-redirects]\n"
    "  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"
)
#: Headers that differ between any two answers (Cache-Control's max-age counts down: checked apart).
PER_REQUEST = {"X-Request-ID", "Date", "Cache-Control"}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryServer,
    s3_server: S3Server,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("cached-redirects"), None, registry, fixture_release, s3=s3_server
    ) as s:
        yield s


@pytest.fixture(scope="module")
def path(stack: Stack) -> str:
    sid = stack.create_schematic(SCHEMATIC)
    built = requests.get(f"{stack.api.url}/image/{sid}/{VERSION}/{ASSET}", allow_redirects=False, timeout=600)
    assert built.status_code == 302, built.text
    return f"/image/{sid}/{VERSION}/{ASSET}"


class InProcess:
    """The stack API's app in this process, with a metrics backend of its own and a count of the
    requests that reached Flask."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in stack.env.items():  # the S3 credentials, as the API processes get them
            monkeypatch.setenv(name, value)
        config = load_config([str(stack.api.config_path)])
        self.backend = PrometheusMetrics()
        services = dataclasses.replace(build_services(config), metrics=self.backend)
        self.app: Flask = create_app(config, services)
        self.flask_calls = 0
        fast = self._find(CachedRedirects)
        flask_app = fast.app

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.flask_calls += 1
            return flask_app(environ, start_response)

        fast.app = counting

    def _find(self, kind: type[CachedRedirects]) -> CachedRedirects:
        layer: Any = self.app.wsgi_app
        while not isinstance(layer, kind):
            layer = layer.app
        return layer

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        response = self.app.test_client().open(path, **kwargs)
        return response.status_code, dict(response.headers), response.get_data()

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(self.backend).decode())
            for s in family.samples
            if not s.name.endswith("_created")
        }


@pytest.fixture
def api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> InProcess:
    return InProcess(stack, monkeypatch)


def delta(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What one request added; durations only by their count (their values are timings)."""
    timed = ("http_request_duration_seconds_bucket", "http_request_duration_seconds_sum")
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0) and key[0] not in timed
    }


def test_a_remembered_asset_is_redirected_exactly_as_flask_does(api: InProcess, path: str) -> None:
    start = api.samples()
    through_flask = api.get(path)
    after_flask = api.samples()
    assert api.flask_calls == 1
    remembered = api.get(path)
    after_fast = api.samples()
    assert api.flask_calls == 1  # answered from what the first request left remembered

    status, headers, body = through_flask
    assert status == 302 and headers["Location"].startswith("http")
    assert (remembered[0], remembered[2]) == (status, body)
    same = {k: v for k, v in headers.items() if k not in PER_REQUEST}
    assert {k: v for k, v in remembered[1].items() if k not in PER_REQUEST} == same
    assert remembered[1]["X-Request-ID"] != headers["X-Request-ID"]
    ages = [int(h["Cache-Control"].removeprefix("public, max-age=")) for h in (headers, remembered[1])]
    assert 0 <= ages[0] - ages[1] <= 1  # the URL's remaining validity, a moment later

    counted = delta(start, after_flask)
    assert delta(after_flask, after_fast) == counted
    names = {name for name, _ in counted}
    assert {
        "image_factory_assets_delivered_cached_total",
        "image_factory_asset_cache_hits_total",
        "image_factory_profile_system_extension_hits_total",
        "http_request_total",
        "http_request_duration_seconds_count",
    } <= names
    label = frozenset({"handler": "/image/:schematic/:version/:path"}.items())
    assert after_fast[("http_requests_inflight", label)] == 0


def test_the_remembered_redirect_downloads(api: InProcess, path: str) -> None:
    api.get(path)
    status, headers, _ = api.get(path, headers={"User-Agent": "curl/8"})
    assert (status, api.flask_calls) == (302, 1)
    downloaded = requests.get(headers["Location"], timeout=30)
    assert downloaded.status_code == 200
    assert downloaded.content == api.get(path, headers={"User-Agent": "iPXE/1.21.1"})[2]  # streamed


@pytest.mark.parametrize(
    ("method", "suffix", "request_headers", "expected"),
    [
        ("HEAD", "", {}, 200),  # never redirected: the size and validators
        ("GET", "?filename=other", {}, 302),
        ("GET", "", {"User-Agent": "iPXE/1.21.1"}, 200),  # PXE clients get the bytes
        ("GET", ".sha256", {}, 200),
        ("GET", "-unknown", {}, 400),  # no such asset
    ],
)
def test_what_the_image_route_must_answer_goes_to_flask(
    api: InProcess,
    path: str,
    method: str,
    suffix: str,
    request_headers: dict[str, str],
    expected: int,
) -> None:
    api.get(path)  # remembered
    status, _, _ = api.get(path + suffix, method=method, headers=request_headers)
    assert (status, api.flask_calls) == (expected, 2)
