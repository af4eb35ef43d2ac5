"""Registry credentials come from the Docker configuration, like upstream's default keychain."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from common.config.options import RepositoryOptions
from common.registry.client import RegistryClient
from common.registry.credentials import docker_config_path


def test_docker_config_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_path() is None
    (tmp_path / "config.json").write_text("{}")
    assert docker_config_path() == tmp_path / "config.json"


def test_client_uses_the_credentials_of_its_registry_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = base64.b64encode(b"robot:s3cret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"mirror.local:5000": {"auth": secret}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.docker/config.json of the machine's
    mine = RegistryClient(RepositoryOptions(registry="mirror.local:5000", repository="talos/imager"))
    other = RegistryClient(RepositoryOptions(registry="ghcr.io", repository="siderolabs/imager"))
    assert getattr(mine._oras.auth, "_basic_auth", None) == secret
    assert getattr(other._oras.auth, "_basic_auth", None) is None
