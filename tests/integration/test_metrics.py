"""Issue 17's metrics through real processes: an API of two gunicorn workers and a Celery worker, each
pod kind with its own listener on ``metrics.addr``, scraped while builds run: a build, cached hits,
failures, the cluster's state, a killed gunicorn worker, and ``promtool check metrics`` on both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import FLUSH_INTERVAL
from devstack.release.release import Release
from devstack.services import RegistryServer, ensure_system_packages
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
EXTENSION = "siderolabs/dummy-module"
IMAGE = "/image/:schematic/:version/:path"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("metrics"),
        None,
        registry,
        fixture_release,
        apis=1,
        workers=1,
        metrics=True,
        **{"http.workers": 2},
    ) as s:
        yield s


def text_of(url: str) -> str:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def scrape(url: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text_of(url))
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def api_metrics(stack: Stack) -> Samples:
    """After the API's gunicorn workers have written what they buffer (``api.metrics.FLUSH_INTERVAL``)."""
    time.sleep(FLUSH_INTERVAL + 0.3)
    return scrape(stack.metrics_urls["api0"])


def worker_metrics(stack: Stack) -> Samples:
    return scrape(stack.metrics_urls["worker0"])


def schematic(stack: Stack, tag: str, extra: str = "") -> str:
    return stack.create_schematic(f"customization:\n  extraKernelArgs:\n    - test={tag}\n{extra}")


def url(stack: Stack, sid: str, path: str, version: str = VERSION) -> str:
    return f"{stack.api.url}/image/{sid}/{version}/{path}"


def gunicorn_workers(stack: Stack) -> list[int]:
    """The API's gunicorn worker pids (children of the master, which is the ``image-factory`` process)."""
    assert stack.api.proc is not None
    master = stack.api.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def multiprocess_dir(stack: Stack) -> Path:
    """The API's multiprocess directory, found through the metric files its master has mapped."""
    assert stack.api.proc is not None
    maps = Path(f"/proc/{stack.api.proc.pid}/maps").read_text().splitlines()
    found = {Path(line.split()[-1]).parent for line in maps if "/image-factory-metrics-" in line}
    assert len(found) == 1, found
    return found.pop()


def test_a_build_then_cached_hits_counted_across_gunicorn_workers_and_the_celery_worker(stack: Stack) -> None:
    api_before, worker_before = api_metrics(stack), worker_metrics(stack)
    sid = schematic(stack, "metrics", f"  systemExtensions:\n    officialExtensions:\n      - {EXTENSION}\n")
    first = requests.get(url(stack, sid, "initramfs-amd64.xz"), timeout=600)
    assert first.status_code == 200, first.text
    size = len(first.content)

    # Cached hits, concurrently, until both gunicorn workers have served (and recorded) some.
    directory, workers, hits = multiprocess_dir(stack), set(gunicorn_workers(stack)), 0
    assert len(workers) == 2
    for _ in range(20):
        with ThreadPoolExecutor(10) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.get(url(stack, sid, "initramfs-amd64.xz"), timeout=60).status_code,
                    range(10),
                )
            )
        assert statuses == [200] * 10
        hits += 10
        recorded = {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("counter_*.db")}
        if workers <= recorded:
            break
    assert workers <= recorded, (workers, recorded)

    api, worker = api_metrics(stack), worker_metrics(stack)

    def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    asset = {"talos_version": "1.12.4", "output_kind": "initramfs", "arch": "amd64"}
    # The API: one miss that queued one build and waited for it, then cached hits (upstream's and ours).
    assert delta(api, api_before, "image_factory_asset_cache_misses_total") == 1
    assert delta(api, api_before, "image_factory_assets_cached_errors_total", **asset) == 1
    assert delta(api, api_before, "image_factory_build_enqueue_total", outcome="enqueued") == 1
    assert delta(api, api_before, "image_factory_build_wait_seconds_count") == 1
    assert delta(api, api_before, "image_factory_asset_cache_hits_total") == hits
    assert delta(api, api_before, "image_factory_assets_delivered_cached_total", **asset) == hits
    assert delta(api, api_before, "image_factory_assets_cached_bytes_total", **asset) == hits * size
    assert (
        delta(api, api_before, "image_factory_profile_system_extension_hits_total", extension=EXTENSION)
        == hits + 1
    )
    assert delta(api, api_before, "image_factory_schematic_create_total") == 1
    assert value(api, "image_factory_build_waiting_clients") == 0
    ok = {"handler": IMAGE, "method": "GET", "status": "200"}
    assert delta(api, api_before, "http_request_duration_seconds_count", **ok) == hits + 1
    assert delta(api, api_before, "http_response_size_bytes_sum", **ok) == (hits + 1) * size
    assert value(api, "http_requests_inflight", handler=IMAGE) == 0
    # The worker: one build, its latencies, its bytes.
    assert delta(worker, worker_before, "image_factory_assets_built_total", **asset) == 1
    assert delta(worker, worker_before, "image_factory_assets_built_bytes_total", **asset) == size
    assert delta(worker, worker_before, "image_factory_assets_build_latency_seconds_count") == 1
    assert delta(worker, worker_before, "image_factory_assets_concurrency_latency_seconds_count") == 1
    assert delta(worker, worker_before, "image_factory_builds_finished_total", outcome="built") == 1
    assert value(worker, "image_factory_builds_running") == 0
    # Each process kind reports its own events only.
    assert value(api, "image_factory_assets_built_total", **asset) == 0
    assert value(worker, "image_factory_asset_cache_hits_total") == 0


def test_failures_are_counted(stack: Stack) -> None:
    api_before, worker_before = api_metrics(stack), worker_metrics(stack)
    sid = schematic(stack, "metrics-failures", "  bootloader: dual-boot\n")
    gone = requests.get(url(stack, sid, "kernel-amd64", version="v1.5.0"), timeout=10)
    assert gone.status_code == 404  # answered by the API: no build
    # dual-boot disk images do not exist for arm64: the worker's imager refuses it (400), remembered.
    failed = requests.get(url(stack, sid, "metal-arm64.raw.xz"), timeout=600)
    again = requests.get(url(stack, sid, "metal-arm64.raw.xz"), timeout=60)
    assert failed.status_code == again.status_code == 400, failed.text
    api, worker = api_metrics(stack), worker_metrics(stack)

    def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(api, api_before, "image_factory_build_enqueue_total", outcome="enqueued") == 1
    assert delta(api, api_before, "image_factory_build_enqueue_total", outcome="failed") == 1
    not_found = {"handler": IMAGE, "method": "GET", "status": "404"}
    bad = {"handler": IMAGE, "method": "GET", "status": "400"}
    assert delta(api, api_before, "http_request_duration_seconds_count", **not_found) == 1
    assert delta(api, api_before, "http_request_duration_seconds_count", **bad) == 2
    assert delta(worker, worker_before, "image_factory_builds_failed_total", reason="invalid") == 1
    assert delta(worker, worker_before, "image_factory_builds_finished_total", outcome="failed") == 1
    assert (
        delta(
            worker,
            worker_before,
            "image_factory_assets_built_total",
            talos_version="1.12.4",
            output_kind="image",
            arch="arm64",
        )
        == 0
    )


def test_cluster_state_and_worker_heartbeat(stack: Stack) -> None:
    api, worker = api_metrics(stack), worker_metrics(stack)
    assert value(api, "image_factory_cluster_state_up") == 1
    assert value(api, "image_factory_workers_live") == 1
    assert value(api, "image_factory_build_queue_length") == 0
    assert value(api, "image_factory_build_queue_oldest_age_seconds") == 0
    assert value(api, "image_factory_build_slots_in_use") == 0
    assert value(api, "image_factory_build_slots_limit") == 6  # build.maxConcurrency's default
    assert time.time() - value(worker, "image_factory_worker_heartbeat_timestamp_seconds") < 60
    assert ("image_factory_workers_live", frozenset()) not in worker  # the cluster is the API's to report
    # A queued build shows in the queue gauges (here one the worker never takes: nothing publishes it).
    stack.redis.zadd("if:build:queue", {"0" * 64: time.time() - 30})
    try:
        queued = api_metrics(stack)
        assert value(queued, "image_factory_build_queue_length") == 1
        assert value(queued, "image_factory_build_queue_oldest_age_seconds") >= 30
    finally:
        stack.redis.zrem("if:build:queue", "0" * 64)


def test_a_killed_gunicorn_worker_keeps_its_counts(stack: Stack) -> None:
    before = api_metrics(stack)
    requests_before = value(before, "http_request_total", method="GET", status="200")
    assert requests_before > 0
    victim = gunicorn_workers(stack)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in gunicorn_workers(stack) or len(gunicorn_workers(stack)) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace its worker"
        time.sleep(0.1)
    after = api_metrics(stack)
    assert value(after, "http_request_total", method="GET", status="200") >= requests_before
    assert not list(multiprocess_dir(stack).glob(f"gauge_live*_{victim}.db"))


def test_both_outputs_pass_promtool_and_the_api_port_has_no_metrics(stack: Stack) -> None:
    ensure_system_packages({"promtool": "prometheus"})
    promtool = shutil.which("promtool")
    assert promtool is not None
    for name, metrics_url in stack.metrics_urls.items():
        text = text_of(metrics_url)
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (name, check)
    assert set(stack.metrics_urls) == {"api0", "worker0"}
    assert requests.get(f"{stack.api.url}/metrics", timeout=10).status_code == 404  # a listener of its own
