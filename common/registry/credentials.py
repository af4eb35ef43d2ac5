"""Registry credentials from the Docker configuration, the default keychain of upstream's factory.

Upstream pulls with go-containerregistry's ``authn.DefaultKeychain``: ``$DOCKER_CONFIG/config.json``
(else ``~/.docker/config.json``), its ``auths`` entries, ``credHelpers`` and ``credsStore``. oras-py
reads the same file and runs the same ``docker-credential-<helper>`` programs
(``oras/auth/base.py``: ``load_configs``, ``_load_auth``); this module only points it at the file.
Registries that answer a token challenge (ghcr.io, Docker Hub, Harbor, quay.io) then get a bearer
token obtained with those credentials; without a configuration nothing changes (anonymous tokens).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import oras.client
import oras.container
import requests

log = logging.getLogger(__name__)


def docker_config_path() -> Path | None:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, if that file exists."""
    directory = os.environ.get("DOCKER_CONFIG")
    path = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
    return path if path.is_file() else None


def load_docker_credentials(client: oras.client.OrasClient, registry: str) -> None:
    """Gives ``client`` the Docker configuration's credentials for ``registry`` (if there are any)."""
    path = docker_config_path()
    if path is None:
        return
    try:
        # A Container, not a string: oras' auth object cannot parse names itself (no ``hostname``).
        container = oras.container.Container(f"{registry}/credentials", registry=registry)
        client.auth.load_configs(container, configs=[str(path)])
    except (OSError, ValueError) as exc:  # a broken file must not stop anonymous pulls
        log.warning("cannot read registry credentials", extra={"path": str(path), "error": str(exc)})
        return
    if getattr(client.auth, "_basic_auth", None):
        _BasicChallenges(client.auth).install()


class _BasicChallenges:
    """Lets oras' token auth also answer ``Basic`` challenges (distribution's ``auth.htpasswd``, other
    registries behind a plain reverse proxy) with the configured credentials.

    oras-py only runs the bearer-token flow (``oras/auth/token.py``: a Basic challenge's realm is not a
    token URL). Once a registry has asked for Basic, the credentials are sent up front, so an upload
    is not streamed twice (``do_request`` adds ``get_auth_header()`` whenever ``token`` is not None).
    """

    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.token_flow = auth.authenticate_request
        self.token_header = auth.get_auth_header
        self.basic = False

    def install(self) -> None:
        self.auth.authenticate_request = self.authenticate_request
        self.auth.get_auth_header = self.get_auth_header

    def _header(self) -> dict[str, str]:
        return {"Authorization": f"Basic {self.auth._basic_auth}"}

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str] | None = None, refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        if original.headers.get("Www-Authenticate", "").lower().startswith("basic"):
            self.basic = True
            self.auth.token = ""  # not None: do_request asks get_auth_header() from now on
            return {**(headers or {}), **self._header()}, True
        result: tuple[dict[str, str], bool] = self.token_flow(original, headers, refresh)
        return result

    def get_auth_header(self) -> dict[str, str]:
        if self.basic:
            return self._header()
        header: dict[str, str] = self.token_header()
        return header
