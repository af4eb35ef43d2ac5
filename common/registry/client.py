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
import os
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import oras.client
import oras.provider
import requests
import urllib3.exceptions

from common.config.options import RepositoryOptions, SourceLimitsOptions
from common.errors import BadSourceError, FactoryError, UnavailableError
from common.registry.credentials import load_docker_credentials
from common.streams import window

log = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
TIMEOUT = 10.0
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


class RegistryError(FactoryError):
    """The registry answered with something we did not expect (not a dependency outage)."""


class HostileSourceError(BadSourceError):
    """A registry sent a response this client will not read to its end: a manifest above the size
    bound, a blob longer than its descriptor says, or a body that keeps arriving past the read-time
    bound (502, naming the registry, the repository and the manifest or blob)."""


@dataclass(frozen=True)
class ReadLimits:
    """How much, and for how long, one response of a registry may be read.

    ``idle_timeout``: seconds without a byte (the socket read timeout; a stalled registry is
    unavailable, 503). ``max_read_time``: seconds one body may take in all, however steadily it
    trickles (None: unbounded), checked after every socket read (``urllib3``'s ``read1``), so a
    registry sending a byte now and then is cut off on time instead of when a whole chunk has
    accumulated. ``max_manifest_size``: the largest manifest or index read into memory.
    """

    max_manifest_size: int = MAX_MANIFEST_SIZE
    idle_timeout: float = TIMEOUT
    max_read_time: float | None = None

    @classmethod
    def from_options(cls, options: SourceLimitsOptions) -> ReadLimits:
        return cls(
            max_manifest_size=options.maxManifestSize,
            idle_timeout=options.idleTimeout.total_seconds(),
            max_read_time=options.maxReadTime.total_seconds(),
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry sent it; ``digest`` is verified against ``body``."""

    body: bytes
    media_type: str
    digest: str

    @property
    def document(self) -> dict[str, Any]:
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class RegistryClient:
    """One repository (registry + namespace/repository) with the calls we need."""

    def __init__(self, repo: RepositoryOptions, limits: ReadLimits | None = None) -> None:
        self.repo = repo
        self.limits = limits or ReadLimits()
        self.scheme = "http" if repo.insecure else "https"
        self._oras = oras.client.OrasClient(hostname=repo.registry, insecure=repo.insecure)
        load_docker_credentials(self._oras, repo.registry)
        self._oras.session.request = _with_timeout(
            self._oras.session.request, (TIMEOUT, self.limits.idle_timeout)
        )
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
        """Raises UnavailableError unless the registry answers its API root below 500 (401 counts
        as up: the registry is there, it wants credentials)."""
        try:
            response = requests.get(f"{self.scheme}://{self.repo.registry}/v2/", timeout=2.0)
        except requests.RequestException as exc:
            raise UnavailableError(
                f"registry {self.repo.registry} is unavailable: {exc.__class__.__name__}"
            ) from exc
        response.close()
        if response.status_code >= 500:
            raise UnavailableError(f"registry {self.repo.registry} answered {response.status_code}")

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
            response.close()
            return None
        _check(response, "GET blob")
        return self._read_bounded(response, max_size, f"blob {digest}")

    def push_blob(self, data: bytes, digest: str | None = None) -> str:
        """Monolithic upload (POST then PUT); returns the digest."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        if self.blob_exists(digest):
            return digest
        self._upload(digest, data)
        return digest

    def _upload(self, digest: str, body: Any) -> None:
        """Monolithic upload: POST for a session, PUT the whole body with its digest."""
        start = self._request("POST", f"{self.base}/blobs/uploads/")
        _check(start, "start blob upload")
        location = urljoin(f"{self.scheme}://{self.repo.registry}/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        _check(done, "finish blob upload")

    def push_blob_file(self, path: Path, digest: str | None = None) -> tuple[str, int]:
        """Monolithic upload streamed from ``path``; returns (digest, size).

        The file is read twice (hash, then upload) in chunks, never held in memory, so multi-GB
        assets cost one chunk of RAM. Skipped when the registry already has the blob.
        """
        size = os.stat(path).st_size
        digest = digest or "sha256:" + file_sha256(path)
        if self.blob_exists(digest):
            return digest, size
        self._upload(digest, _FileBody(path, size) if size else b"")
        return digest, size

    def push_blob_chunks(self, digest: str, size: int, chunks: Callable[[], Iterable[bytes]]) -> None:
        """Monolithic upload of a blob whose digest is known, streamed from ``chunks()``.

        ``chunks`` is called again if the upload is retried (oras repeats a request after a 401),
        so a source that can be read twice (a cached asset's byte range) never sits in memory.
        Skipped when the registry already has the blob.
        """
        if self.blob_exists(digest):
            return
        self._upload(digest, _ChunksBody(chunks, size) if size else b"")

    def put_manifest(self, reference: str, manifest: dict[str, Any], media_type: str) -> str:
        return self.put_manifest_bytes(
            reference, json.dumps(manifest, separators=(",", ":")).encode(), media_type
        )

    def put_manifest_bytes(self, reference: str, body: bytes, media_type: str) -> str:
        response = self._request(
            "PUT", f"{self.base}/manifests/{reference}", data=body, headers={"Content-Type": media_type}
        )
        _check(response, "PUT manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(self, reference: str) -> Manifest | None:
        """The manifest or index at a tag or digest, or None when absent.

        The body's sha256 is checked against a digest reference (and against the registry's
        Docker-Content-Digest header for tags), so a lying registry cannot substitute content.
        """
        response = self._request(
            "GET", f"{self.base}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}, stream=True
        )
        if response.status_code == 404:
            response.close()
            return None
        _check(response, f"GET manifest {reference}")
        body = self._read_bounded(response, self.limits.max_manifest_size, f"manifest {reference}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = (
            reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        )
        if expected and expected != digest:
            raise RegistryError(f"manifest {self.repo.path}@{reference} does not match its digest {expected}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            media_type = str(json.loads(body).get("mediaType", media_type))
        return Manifest(body=body, media_type=media_type, digest=digest)

    def resolve(self, reference: str, missing: Collection[int] = (404,)) -> str | None:
        """The digest a tag points at (HEAD), or None when the tag does not exist.

        ``missing``: the statuses that mean "absent" (upstream's asset cache also counts 403, which
        some registries answer for a repository that was never pushed).
        """
        response = self._request(
            "HEAD", f"{self.base}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}
        )
        if response.status_code in missing:
            return None
        _check(response, f"HEAD manifest {reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        manifest = self.get_manifest(reference)
        return manifest.digest if manifest else None

    def get_referrers(self, digest: str) -> dict[str, Any] | None:
        """The OCI 1.1 referrers index of ``digest``, or None when the registry has no referrers API."""
        response = self._request(
            "GET", f"{self.base}/referrers/{digest}", headers={"Accept": OCI_INDEX}, stream=True
        )
        if response.status_code in (404, 405) or not response.headers.get("Content-Type", "").startswith(
            OCI_INDEX
        ):
            response.close()
            return None
        _check(response, "GET referrers")
        body = self._read_bounded(response, self.limits.max_manifest_size, f"referrers of {digest}")
        value = json.loads(body)
        return value if isinstance(value, dict) else None

    def list_tags(self, page_size: int = 1000) -> list[str]:
        """Every tag of the repository (follows the registry's Link pagination); [] when it does not exist."""
        tags: list[str] = []
        url: str | None = f"{self.base}/tags/list?n={page_size}"
        while url:
            response = self._request("GET", url, stream=True)
            if response.status_code == 404:
                response.close()
                return tags
            _check(response, "list tags")
            page = json.loads(self._read_bounded(response, self.limits.max_manifest_size, "the tag list"))
            tags.extend(page.get("tags") or [])
            url = _next_link(response, f"{self.scheme}://{self.repo.registry}")
        return tags

    def stream_blob(
        self,
        digest: str,
        chunk_size: int = 1 << 20,
        *,
        start: int = 0,
        length: int | None = None,
        size: int | None = None,
    ) -> Generator[bytes, None, None]:
        """The blob's bytes ``[start, start+length)`` in chunks (to the end when ``length`` is None).

        Full reads are not digest-checked here: the caller sees every byte and verifies. A registry
        that ignores the Range header (200 instead of 206) is handled by skipping the leading bytes.
        The HTTP response is closed when the iterator is exhausted or closed. ``size``: the size the
        blob's descriptor gives; a full read that declares or sends more is refused
        (:class:`HostileSourceError`) as soon as it does, so an endless blob costs ``size`` bytes.
        """
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"invalid byte range start={start} length={length}")
        if length == 0:
            return
        headers = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            headers["Range"] = f"bytes={start}-{end}"
        response = self._request("GET", f"{self.base}/blobs/{digest}", stream=True, headers=headers)
        if response.status_code == 404:
            response.close()
            raise RegistryError(f"blob {self.repo.path}@{digest} does not exist")
        _check(response, "GET blob")
        skip = start if headers and response.status_code != 206 else 0
        what = f"blob {digest}"
        with response:
            chunks = self._body(response, chunk_size, what)
            if size is not None and not headers:
                chunks = self._at_most(response, chunks, size, what)
            yield from window(chunks, skip, length)

    def _at_most(
        self, response: requests.Response, chunks: Iterator[bytes], size: int, what: str
    ) -> Iterator[bytes]:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > size:
            raise HostileSourceError(
                f"{self._where(what)} is {declared} bytes, more than the {size} its descriptor gives: refused"
            )
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            if seen > size:
                raise HostileSourceError(
                    f"{self._where(what)} sent more than the {size} bytes its descriptor gives: refused"
                )
            yield chunk

    def _where(self, what: str) -> str:
        return f"registry {self.repo.registry}: {self.repo.path} {what}"

    def _body(self, response: requests.Response, chunk_size: int, what: str) -> Iterator[bytes]:
        """The body as it arrives (each chunk what one socket read gave, at most ``chunk_size``),
        within ``limits``: a stall is :class:`UnavailableError` (503), a body still arriving after
        ``max_read_time`` is :class:`HostileSourceError` (502)."""
        limit = self.limits.max_read_time
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            try:
                chunk = response.raw.read1(chunk_size, decode_content=True)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                if _is_timeout(exc):
                    raise UnavailableError(
                        f"{self._where(what)}: nothing arrived for {self.limits.idle_timeout:g} s"
                    ) from exc
                raise UnavailableError(
                    f"{self._where(what)}: reading failed: {exc.__class__.__name__}"
                ) from exc
            if not chunk:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise HostileSourceError(
                    f"{self._where(what)} was still arriving after {limit:g} s "
                    "(artifacts.limits.maxReadTime): refused"
                )
            yield chunk

    def _read_bounded(self, response: requests.Response, limit: int, what: str) -> bytes:
        """The whole body, refused (502) as soon as it passes ``limit`` bytes or the read-time bound."""
        chunks: list[bytes] = []
        size = 0
        with response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HostileSourceError(
                    f"{self._where(what)} is {declared} bytes, more than the {limit} allowed: refused"
                )
            for chunk in self._body(response, 65536, what):
                size += len(chunk)
                if size > limit:
                    raise HostileSourceError(
                        f"{self._where(what)} is larger than the {limit} bytes allowed: refused"
                    )
                chunks.append(chunk)
        return b"".join(chunks)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class _FileBody:
    """A request body streamed from a file that can be sent again (oras retries after a 401).

    requests sends an object with ``__iter__`` and ``__len__`` with a Content-Length header and
    no chunked encoding, which registries require for a monolithic PUT.
    """

    def __init__(self, path: Path, size: int, chunk_size: int = 1 << 20) -> None:
        self.path, self.size, self.chunk_size = path, size, chunk_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            while chunk := f.read(self.chunk_size):
                yield chunk


class _ChunksBody:
    """Like :class:`_FileBody`, over a callable that yields the bytes afresh on every iteration."""

    def __init__(self, chunks: Callable[[], Iterable[bytes]], size: int) -> None:
        self.chunks, self.size = chunks, size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks()


def _is_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | urllib3.exceptions.TimeoutError | requests.Timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _next_link(response: requests.Response, origin: str) -> str | None:
    link = response.links.get("next", {}).get("url")
    return urljoin(origin + "/", link) if link else None


def _check(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RegistryError(f"registry refused {what}: {response.status_code} {_error_text(response)}")


def _error_text(response: requests.Response) -> str:
    """The start of an error body, never more than one socket read: a hostile registry's endless
    or trickling error body must not hold the caller (``response.text`` would read all of it)."""
    loaded = getattr(response, "_content", False)  # requests' own: bytes once read (not streamed)
    try:
        head = loaded if isinstance(loaded, bytes) else response.raw.read1(512, decode_content=True)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
        head = b""
    finally:
        response.close()
    return head[:200].decode("utf-8", "replace")


def _with_timeout(request: Any, timeout: tuple[float, float]) -> Any:
    """``timeout``: (connect, read) seconds; the read timeout is the idle bound between socket reads."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return wrapped
