"""A thin OCI distribution client on top of oras-py for the few calls the factory makes itself.

oras-py handles auth and the registry conversation; we add byte-level blob push, raw manifest
PUT (oras only pushes OCI manifests, we also need Docker schema 2 for upstream compatibility),
and the mapping of registry failures to our error classes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from typing import Any
from urllib.parse import urljoin

import oras.client
import oras.provider
import requests

from common.config.options import RepositoryOptions
from common.errors import FactoryError, UnavailableError

log = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
TIMEOUT = 10.0


class RegistryError(FactoryError):
    """The registry answered with something we did not expect (not a dependency outage)."""


class RegistryClient:
    """One repository (registry + namespace/repository) with the calls we need."""

    def __init__(self, repo: RepositoryOptions) -> None:
        self.repo = repo
        self.scheme = "http" if repo.insecure else "https"
        self._oras = oras.client.OrasClient(hostname=repo.registry, insecure=repo.insecure)
        self._oras.session.request = _with_timeout(self._oras.session.request)
        # oras' do_request retries with sleeps of up to 83 s; an API request wants a quick 503
        # instead, and background jobs bring their own retry policy. Keep oras' auth handling.
        self._do = functools.partial(oras.provider.Registry.do_request.__wrapped__, self._oras)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.repo.registry}/v2/{self.repo.path}"

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            response: requests.Response = self._do(url, method, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise UnavailableError(
                f"registry {self.repo.registry} is unavailable: {exc.__class__.__name__}"
            ) from exc
        if response.status_code >= 500:
            raise UnavailableError(f"registry {self.repo.registry} answered {response.status_code}")
        return response

    def ping(self) -> None:
        """Raises UnavailableError unless the registry answers its API root (401 counts as up)."""
        try:
            requests.get(f"{self.scheme}://{self.repo.registry}/v2/", timeout=2.0)
        except requests.RequestException as exc:
            raise UnavailableError(f"registry {self.repo.registry} is unavailable") from exc

    def blob_exists(self, digest: str) -> bool:
        response = self._request("HEAD", f"{self.base}/blobs/{digest}")
        if response.status_code == 404:
            return False
        _check(response, "HEAD blob")
        return True

    def get_blob(self, digest: str, max_size: int) -> bytes | None:
        """The blob's bytes, or None when absent; refuses blobs larger than ``max_size``."""
        response = self._request("GET", f"{self.base}/blobs/{digest}", stream=True)
        if response.status_code == 404:
            return None
        _check(response, "GET blob")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > max_size:
                response.close()
                raise RegistryError(f"blob {digest} is larger than {max_size} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def push_blob(self, data: bytes, digest: str | None = None) -> str:
        """Monolithic upload (POST then PUT); returns the digest."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        if self.blob_exists(digest):
            return digest
        start = self._request("POST", f"{self.base}/blobs/uploads/")
        _check(start, "start blob upload")
        location = urljoin(f"{self.scheme}://{self.repo.registry}/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _check(done, "finish blob upload")
        return digest

    def put_manifest(self, reference: str, manifest: dict[str, Any], media_type: str) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        response = self._request(
            "PUT", f"{self.base}/manifests/{reference}", data=body, headers={"Content-Type": media_type}
        )
        _check(response, "PUT manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()


def _check(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RegistryError(f"registry refused {what}: {response.status_code} {response.text[:200]}")


def _with_timeout(request: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", TIMEOUT)
        return request(*args, **kwargs)

    return wrapped
