"""Failures against a Talos-like release this factory has never seen (issue 18), through real processes.

- An extension layer whose blob does not match its digest: 502 naming the image and the reason, for
  every client waiting on the build (two here, both waiting before any worker runs) and for the next.
- A build that fails inside the imager (a release whose systemd-stub is not a PE file): the clients
  get upstream's bare 500, and the cause is kept where operators look: the build record (cause and
  traceback), the worker's log (exception and traceback, build key, request id) and the API's log
  (the cause with the build key and request id).
- The same for an exception that is not the factory's own (``RuntimeError`` inside ``build``), in process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from common.builds.plan import BuildRequest, plan_request
from common.config import load_config
from common.logging import request_id_var
from common.services import build_services
from devstack.factory import factory_config, write_config
from devstack.release.release import Release, factory_overrides
from devstack.services import RedisServer, RegistryServer
from tests.support.release_variants import corrupt_extension_release, imager_variant
from tests.support.stack import Stack, factory_stack
from worker import pipeline

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
STUB = "usr/install/amd64/systemd-stub.efi"
WAIT = 180


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _only_record(stack: Stack) -> tuple[str, dict[str, str]]:
    (name,) = [k.decode() for k in stack.redis.scan_iter("if:build:rec:*")]
    key = name.removeprefix("if:build:rec:")
    return key, stack.record(key)


def _get_all(urls_and_ids: list[tuple[str, str]]) -> list[requests.Response]:
    """The GETs at once (each its own thread), answers in order."""
    answers: list[requests.Response | None] = [None] * len(urls_and_ids)
    start = threading.Barrier(len(urls_and_ids))

    def get(i: int, url: str, rid: str) -> None:
        start.wait()
        answers[i] = requests.get(url, headers={"X-Request-ID": rid}, timeout=WAIT)

    threads = [threading.Thread(target=get, args=(i, *pair)) for i, pair in enumerate(urls_and_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT + 10)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def _wait_queued(stack: Stack) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        keys = list(stack.redis.scan_iter("if:build:rec:*"))
        if keys:
            key = keys[0].decode().removeprefix("if:build:rec:")
            if stack.record(key).get("status") == "queued":
                return key
        time.sleep(0.1)
    raise AssertionError("no build was queued")


def test_a_corrupt_extension_layer_is_a_502_naming_the_image_for_every_waiter(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    bad = corrupt_extension_release(registry, fixture_release, VERSION)
    with factory_stack(tmp_path, None, registry, bad.release, apis=1, workers=0) as stack:
        sid = stack.create_schematic(
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/corrupt-ext]\n"
        )
        url = f"{stack.api.url}/image/{sid}/{VERSION}/initramfs-amd64.xz"
        answers: list[requests.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.extend(_get_all([(url, "waiter-1"), (url, "waiter-2")]))
        )
        waiting.start()
        key = _wait_queued(stack)
        time.sleep(2)  # both requests are in: no worker yet, so both wait on the queued build
        assert stack.record(key)["status"] == "queued" and not answers
        stack.add_worker()
        waiting.join(WAIT + 20)
        expected = (
            f"image {bad.image}: layer {bad.layer} does not match its digest (the registry sent content "
            "hashing to sha256:"
        )
        for answer in answers:
            assert answer.status_code == 502, answer.text
            assert answer.text.startswith(expected) and answer.text.endswith(")\n"), answer.text
        assert answers[0].text == answers[1].text
        # the next client gets the remembered failure, without another build
        again = requests.get(url, headers={"X-Request-ID": "waiter-3"}, timeout=WAIT)
        assert (again.status_code, again.text) == (502, answers[0].text)
        assert stack.runs(key) == 1
        record = stack.record(key)
        assert (record["status"], record["errorStatus"]) == ("failed", "502")
        assert record["error"] == answers[0].text.rstrip("\n")
        assert record["cause"] == "BadSourceError: " + record["error"]
        assert "Traceback (most recent call last)" in record["traceback"]
        worker_lines = [
            e
            for e in _lines(stack.workers[0].new_log_text())
            if e.get("key") == key and e["msg"].startswith("build failed")
        ]
        (failed,) = worker_lines
        assert failed["level"] == "ERROR" and failed["status"] == 502
        assert failed["request_id"] in ("waiter-1", "waiter-2")
        assert "BadSourceError" in failed["exc_info"] and "Traceback" in failed["exc_info"]
        api_lines = [e for e in _lines(stack.api.new_log_text()) if e.get("logger") == "api.errors"]
        assert {e["request_id"] for e in api_lines} == {"waiter-1", "waiter-2", "waiter-3"}
        assert all(e["key"] == key and e["status"] == 502 for e in api_lines)


def test_a_failing_build_is_a_bare_500_whose_cause_is_logged_and_kept(
    registry: RegistryServer, fixture_release: Release, tmp_path: Path
) -> None:
    broken = imager_variant(
        registry, fixture_release, VERSION, replace={STUB: b"MZ" + bytes(510)}, label="not-a-pe-stub"
    )
    with factory_stack(tmp_path, None, registry, broken, apis=1, workers=1) as stack:
        sid = stack.create_schematic("{}")
        url = f"{stack.api.url}/image/{sid}/{VERSION}/metal-amd64-uki.efi"
        (first, second) = _get_all([(url, "forced-500-a"), (url, "forced-500-b")])
        for answer in (first, second):
            assert (answer.status_code, answer.text) == (500, "internal server error\n")
        key, record = _only_record(stack)
        assert (record["status"], record["errorStatus"], record["error"]) == (
            "failed",
            "500",
            "internal server error",
        )
        cause = "UKIError: systemd stub systemd-stub.efi is not a PE file: "
        assert record["cause"].startswith(cause), record
        assert "Traceback (most recent call last)" in record["traceback"]
        assert "worker/imager/uki.py" in record["traceback"]
        (failed,) = [
            e
            for e in _lines(stack.workers[0].new_log_text())
            if e.get("key") == key and e["msg"].startswith("build failed")
        ]
        assert failed["level"] == "ERROR" and failed["cause"].startswith(cause)
        assert failed["request_id"] in ("forced-500-a", "forced-500-b")
        assert "Traceback (most recent call last)" in failed["exc_info"] and "UKIError" in failed["exc_info"]
        api_lines = [e for e in _lines(stack.api.new_log_text()) if e.get("logger") == "api.errors"]
        assert {e["request_id"] for e in api_lines} == {"forced-500-a", "forced-500-b"}
        for line in api_lines:
            assert line["level"] == "ERROR" and line["key"] == key and line["status"] == 500
            assert line["cause"].startswith(cause) and "uki.py" in line["worker_traceback"]
            assert key in line["msg"] and cause in line["msg"]


def test_an_unexpected_exception_in_a_build_keeps_its_cause(
    registry: RegistryServer,
    fixture_release: Release,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``run_build`` in this process, ``build`` replaced by one that raises (not a FactoryError)."""

    def broken_build(*_: object, **__: object) -> None:
        raise RuntimeError("the disk vanished under the imager")

    with RedisServer(tmp_path / "redis") as redis_server:
        overrides = {
            **factory_overrides(fixture_release),
            "artifacts.storageDir": str(tmp_path / "store"),
            "build.scratchDir": str(tmp_path / "scratch"),
        }
        write_config(tmp_path / "config.yaml", factory_config(redis_server.url, registry.host, **overrides))
        services = build_services(load_config([str(tmp_path / "config.yaml")]))
        sid = services.schematics.create(b"{}").id
        monkeypatch.setattr(pipeline, "build", broken_build)
        request = BuildRequest(sid, VERSION, "cmdline-metal-amd64")
        _, plan = plan_request(services.schematics, services.artifacts, sid, VERSION, request.path)
        key = plan.key
        token = request_id_var.set("forced-in-process")  # as the Celery task restores it
        try:
            with caplog.at_level(logging.INFO, logger="worker.pipeline"):
                outcome = pipeline.run_build(services, key, request, retries=0)
        finally:
            request_id_var.reset(token)
        assert outcome.status == "failed" and outcome.detail == "internal server error"
        record = services.builds.get(key)
        assert record is not None
        assert (record.error_status, record.error) == (500, "internal server error")
        assert record.cause == "RuntimeError: the disk vanished under the imager"
        assert record.traceback.startswith("Traceback (most recent call last)")
        assert "broken_build" in record.traceback
        (line,) = [r for r in caplog.records if r.getMessage().startswith("build failed")]
        assert line.levelno == logging.ERROR and line.exc_info is not None
        assert line.key == key and line.cause == record.cause  # type: ignore[attr-defined]
        assert line.request_id == "forced-in-process"  # type: ignore[attr-defined]
