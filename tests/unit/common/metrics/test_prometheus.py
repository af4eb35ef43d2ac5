"""The Metrics interface: the no-op backend, the Prometheus backend (single-process here; the
multiprocess mode is in test_multiprocess.py) and the choice between them by configuration."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import load_config
from common.metrics import DEFINITIONS, NULL_METRICS, Kind, Metrics, NullMetrics, metrics_for
from common.metrics import definitions as d
from common.metrics.prometheus import PrometheusMetrics, generate_latest
from devstack.services import ensure_system_packages

LABELS = {"talos_version": "1.12.4", "output_kind": "iso", "arch": "amd64"}


def samples(backend: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(backend).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_events_reach_the_exposition() -> None:
    backend = PrometheusMetrics()
    backend.inc(d.ASSETS_BUILT, **LABELS)
    backend.inc(d.ASSETS_BUILT_BYTES, 1024, **LABELS)
    backend.inc(d.ASSETS_BUILT_BYTES, 1024, **LABELS)
    backend.observe(d.ASSETS_BUILD_LATENCY, 7.5)
    backend.inc(d.CLIENTS_WAITING)
    backend.inc(d.CLIENTS_WAITING)
    backend.inc(d.CLIENTS_WAITING, -1)
    backend.set(d.SCHEMATIC_CACHE_SIZE, 3)
    backend.inc(d.EXTENSION_HITS, extension="siderolabs/gvisor")
    found = samples(backend)
    labels = tuple(sorted(LABELS.items()))
    assert found[("image_factory_assets_built_total", labels)] == 1
    assert found[("image_factory_assets_built_bytes_total", labels)] == 2048
    assert found[("image_factory_assets_build_latency_seconds_bucket", (("le", "10.0"),))] == 1
    assert found[("image_factory_assets_build_latency_seconds_bucket", (("le", "1.0"),))] == 0
    assert found[("image_factory_assets_build_latency_seconds_sum", ())] == 7.5
    assert found[("image_factory_build_waiting_clients", ())] == 1
    assert found[("image_factory_schematic_cache_size", ())] == 3
    assert (
        found[("image_factory_profile_system_extension_hits_total", (("extension", "siderolabs/gvisor"),))]
        == 1
    )


def test_counters_start_at_zero_and_gauges_appear_once_set() -> None:
    backend = PrometheusMetrics()
    found = {name for name, _ in samples(backend)}
    assert "image_factory_schematic_create_total" in found  # a rate has its first point
    assert "image_factory_assets_build_latency_seconds_count" in found
    assert "image_factory_builds_running" not in found  # an API never runs builds: no zero gauge
    assert "image_factory_worker_heartbeat_timestamp_seconds" not in found
    backend.set(d.WORKER_HEARTBEAT, 1700000000.0)
    assert samples(backend)[("image_factory_worker_heartbeat_timestamp_seconds", ())] == 1700000000.0


def test_backends_do_not_share_values() -> None:
    one, two = PrometheusMetrics(), PrometheusMetrics()
    one.inc(d.SCHEMATIC_CREATE)
    assert samples(one)[("image_factory_schematic_create_total", ())] == 1
    assert samples(two)[("image_factory_schematic_create_total", ())] == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.inc(d.ASSETS_BUILT), "takes labels"),
        (lambda m: m.inc(d.ASSETS_BUILT, **LABELS, extra="x"), "takes labels"),
        (lambda m: m.inc(d.SCHEMATIC_GET, arch="amd64"), "takes labels"),
        (lambda m: m.inc(d.ASSETS_BUILD_LATENCY), "is a histogram"),
        (lambda m: m.observe(d.SCHEMATIC_GET, 1.0), "not a histogram"),
        (lambda m: m.set(d.SCHEMATIC_GET, 1.0), "not a gauge"),
        (lambda m: m.set(d.BUILD_QUEUE_LENGTH, 1.0), "not recorded by events"),
        (lambda m: m.inc(d.SCHEMATIC_GET, -1), "only be incremented"),
    ],
)
def test_misuse_is_a_programming_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(PrometheusMetrics())  # type: ignore[operator]


def test_a_write_that_fails_does_not_fail_the_caller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PrometheusMetrics()
    counter = backend._metrics[d.SCHEMATIC_GET.name]

    def full(_amount: float = 1.0) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(counter, "inc", full)
    backend.inc(d.SCHEMATIC_GET)
    backend.inc(d.SCHEMATIC_GET)
    assert [r.getMessage() for r in caplog.records].count("cannot record a metric") == 1


def test_null_backend_drops_everything() -> None:
    null: Metrics = NullMetrics()
    null.inc(d.ASSETS_BUILT, **LABELS)
    null.observe(d.ASSETS_BUILD_LATENCY, 1.0)
    null.set(d.CLIENTS_WAITING, 2)
    assert null.collector_registry is None


def test_backend_is_chosen_by_metrics_addr() -> None:
    assert metrics_for(load_config([], environ={"IF_METRICS_ADDR": ""})) is NULL_METRICS
    chosen = metrics_for(load_config([], environ={}))  # upstream's default :2122
    assert isinstance(chosen, PrometheusMetrics) and not chosen.multiprocess


def test_every_metric_passes_promtool_check_metrics() -> None:
    ensure_system_packages({"promtool": "prometheus"})
    backend = PrometheusMetrics()
    for metric in DEFINITIONS:
        if metric.collected:
            continue
        labels = dict.fromkeys(metric.labels, "x")
        if metric.kind is Kind.HISTOGRAM:
            backend.observe(metric, 1.0, **labels)
        elif metric.kind is Kind.GAUGE:
            backend.set(metric, 1.0, **labels)
        else:
            backend.inc(metric, **labels)
    text = generate_latest(backend).decode()
    promtool = shutil.which("promtool")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
