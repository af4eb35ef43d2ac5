"""Shared, session-scoped backing services for the test suite.

Each fixture starts its own private process on a free loopback port with state under the session's
tmp dir (see devstack.services), so tests never touch services already running on the machine.
Markers (integration, e2e) are registered in pyproject.toml.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from devstack.release.release import Release, build_release
from devstack.services import RedisServer, RegistryServer, S3Server, ensure_system_packages


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
