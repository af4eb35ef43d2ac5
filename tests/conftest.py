"""Shared, session-scoped backing services for the test suite.

Each fixture starts its own private process on a free loopback port with state under the session's
tmp dir (see devstack.services), so tests never touch services already running on the machine.
Markers (integration, e2e) are registered in pyproject.toml.

Under ``CI=true`` a skip is a failure: a missing tool, library, file or filesystem capability must not
turn a regression into a quiet "s" in a green run (see ``pytest_runtest_makereport`` below).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator

import pytest

from devstack.release.release import Release, build_release
from devstack.services import RedisServer, RegistryServer, S3Server, ensure_system_packages


def in_ci() -> bool:
    """``CI`` set to a true value (``true``, as CI services export it, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


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
    """The miniature Talos release (devstack.release), pushed once per session under ``fixture/``."""
    return build_release(registry.host, tmp_path_factory.mktemp("release"), namespace="fixture")
