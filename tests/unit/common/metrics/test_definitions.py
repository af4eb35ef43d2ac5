"""The metric table: upstream's names, types, labels and help texts, and Prometheus naming rules."""

from __future__ import annotations

import re

import pytest

from common.metrics import definitions as d
from common.metrics.definitions import DEFINITIONS, Kind, Metric

ASSET = ("talos_version", "output_kind", "arch")

#: From upstream HEAD (internal/asset/asset.go, internal/schematic/schematic.go,
#: internal/schematic/storage/cache/cache.go, internal/profile/profile.go, go-http-metrics).
UPSTREAM = {
    "image_factory_assets_delivered_cached_total": (
        Kind.COUNTER,
        ASSET,
        "Number of assets retrieved from cache.",
    ),
    "image_factory_assets_built_total": (
        Kind.COUNTER,
        ASSET,
        "Number of assets built (missing in the cache).",
    ),
    "image_factory_assets_cached_bytes_total": (
        Kind.COUNTER,
        ASSET,
        "Number of bytes delivered with cached assets.",
    ),
    "image_factory_assets_built_bytes_total": (
        Kind.COUNTER,
        ASSET,
        "Number of bytes delivered with assets built (missing in the cache).",
    ),
    "image_factory_assets_cached_errors_total": (
        Kind.COUNTER,
        ASSET,
        "Number of errors retrieving assets from cache.",
    ),
    "image_factory_assets_concurrency_latency_seconds": (
        Kind.HISTOGRAM,
        (),
        "Latency of asset build related to the concurrency limit (waiting for available workers).",
    ),
    "image_factory_assets_build_latency_seconds": (
        Kind.HISTOGRAM,
        (),
        "Latency of asset build for the build itself (excluding waiting for available workers).",
    ),
    "image_factory_schematic_get_total": (Kind.COUNTER, (), "Number of times schematics were retrieved."),
    "image_factory_schematic_create_total": (Kind.COUNTER, (), "Number of new schematics created."),
    "image_factory_schematic_duplicate_create_total": (
        Kind.COUNTER,
        (),
        "Number of new schematics which were created as duplicate.",
    ),
    "image_factory_schematic_cache_size": (Kind.GAUGE, (), "Number of schematics in in-memory cache."),
    "image_factory_profile_system_extension_hits_total": (
        Kind.COUNTER,
        ("extension",),
        "Number of times system extension was used in images build.",
    ),
    "http_response_size_bytes": (
        Kind.HISTOGRAM,
        ("method", "handler", "status"),
        "The size of the HTTP responses.",
    ),
    "http_requests_inflight": (
        Kind.GAUGE,
        ("handler",),
        "The number of inflight requests being handled at the same time.",
    ),
}


def test_upstream_metrics_are_upstreams() -> None:
    ours = {m.name: (m.kind, m.labels, m.help) for m in DEFINITIONS if m.upstream}
    assert ours == UPSTREAM


def test_upstream_buckets() -> None:
    assert d.ASSETS_BUILD_LATENCY.buckets == d.ASSETS_CONCURRENCY_LATENCY.buckets == (1, 10, 60, 180, 600)
    assert d.HTTP_RESPONSE_SIZE.buckets == tuple(100 * 10**n for n in range(8))


def test_http_metrics_keep_prometheus_flask_exporters_shape() -> None:
    """What the exporter (0.23.2, ``export_defaults``) exported, which README, dashboards and alerts name."""
    assert (d.HTTP_DURATION.name, d.HTTP_DURATION.kind, d.HTTP_DURATION.labels) == (
        "http_request_duration_seconds",
        Kind.HISTOGRAM,
        ("method", "handler", "status"),
    )
    assert d.HTTP_DURATION.buckets == (
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        0.75,
        1,
        2.5,
        5,
        7.5,
        10,
    )
    for metric, name in (
        (d.HTTP_REQUESTS, "http_request_total"),
        (d.HTTP_EXCEPTIONS, "http_request_exceptions_total"),
    ):
        assert (metric.name, metric.kind, metric.labels) == (name, Kind.COUNTER, ("method", "status"))
    assert {d.HTTP_DURATION.name, d.HTTP_REQUESTS.name, d.HTTP_EXCEPTIONS.name} == d.FLASK_EXPORTER


def test_names_are_unique_and_follow_prometheus_conventions() -> None:
    names = [m.name for m in DEFINITIONS]
    assert len(names) == len(set(names))
    for m in DEFINITIONS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", m.name), m.name
        assert m.name.endswith("_total") == (m.kind is Kind.COUNTER), m.name
        assert m.help and m.help[0].isupper(), m.name
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", label) for label in m.labels), m.name
        if not m.upstream and m.name not in d.FLASK_EXPORTER:
            assert m.name.startswith("image_factory_"), m.name
        if m.kind is Kind.GAUGE:
            assert m.gauge_mode in {"livesum", "livemax", "livemin", "liveall", "livemostrecent"}, m.name


def test_every_definition_is_reachable_as_a_module_constant() -> None:
    constants = {v for v in vars(d).values() if isinstance(v, Metric)}
    assert constants == set(DEFINITIONS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x_count", "kind": Kind.COUNTER}, "must end in _total"),
        ({"name": "x_seconds", "kind": Kind.HISTOGRAM}, "needs buckets"),
        ({"name": "x_total", "kind": Kind.COUNTER, "collected": True}, "must be a gauge"),
    ],
)
def test_malformed_definitions_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric(help="Help.", **kwargs)  # type: ignore[arg-type]
