"""Shared, session-scoped backing services for the test suite.

Each fixture starts its own private process on a free loopback port with state under the session's
tmp dir (see devstack.services), so tests never touch services already running on the machine.
Markers (integration, e2e) are registered in pyproject.toml.

Under ``CI=true`` a skip is a failure: a missing tool, library, file or filesystem capability must not
turn a regression into a quiet "s" in a green run (see ``pytest_runtest_makereport`` below). That holds
under pytest-xdist too: the reports are rewritten in the worker, before they reach the controller.

``make test`` runs on pytest-xdist workers (``-n 2 --dist loadfile``): each worker has its own session
fixtures; whole modules go to one worker, some modules share one (``pytest_xdist_make_scheduler``), and
the fixture release is built once per run (tests/support/xdist_shared.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer, S3Server, ensure_system_packages
from tests.support.xdist_shared import shared_release


def in_ci() -> bool:
    """``CI`` set to a true value (``true``, as CI services export it, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the machine had at the start (a run that fails for a full disk or no memory says so)."""
    import tempfile

    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    with open("/proc/meminfo") as meminfo:
        found = [line.split()[1] for line in meminfo if line.startswith("MemAvailable:")]
    available = int(found[0]) / 2**20 if found else 0.0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [f"machine: {free:.1f} GiB free in {tmp}, {available:.1f} GiB memory available, load {load}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Under CI, every skip (``pytest.skip``, ``skipif``, ``importorskip``, in any phase) fails the test.

    Expected failures (xfail) are left alone: they are not skips.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci():
        return
    _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, None]:
    """The same for a whole module skipped while collecting (``pytest.skip(allow_module_level=True)``)."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and in_ci():
        _fail_skip(report)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true (a skip here would hide a regression): {reason}"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` keeps each module on one worker, and the modules of ``xdist_shared.GROUPS``
    (which share something machine-wide) on the same one. tryfirst: xdist's own answer comes later."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.support.xdist_shared import GroupedFileScheduling  # imports xdist, present only with it

    return GroupedFileScheduling(config, log)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def skopeo() -> str:
    """Path of the skopeo binary (installed on demand): an independent OCI client for cross-checks."""
    ensure_system_packages({"skopeo": "skopeo"})
    path = shutil.which("skopeo")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def fixture_release(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The miniature Talos release (devstack.release) under ``fixture/`` in the session's registry.

    Built and pushed once per run, by the first xdist worker that asks, then copied into each worker's
    registry storage (tests/support/xdist_shared.py): ~50 s once instead of once per worker.
    """
    return shared_release(registry, tmp_path_factory, namespace="fixture")
