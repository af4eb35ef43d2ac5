"""The asset cache contract: what the API reads and the worker publishes, whatever the backend.

Backends (``oci``, ``s3``, ``cdn``) implement :class:`AssetCache`; :func:`common.cache.build_cache`
composes them from the configuration. A key is a profile hash (64 hex characters).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Bytes per streamed chunk: the API never holds more than this of an asset (about two per download:
#: the one being sent, the next being read). With 1 MiB, 20 concurrent downloads grew the API by
#: 49 MiB (``bench/memory.py``, target < 50 MB); the per-chunk overhead is a few microseconds.
CHUNK = 256 << 10


@dataclass(frozen=True)
class AssetInfo:
    """What is stored next to the bytes: the download name and its media type."""

    filename: str  # the request path (upstream's Content-Disposition file name)
    content_type: str


class CachedAsset(Protocol):
    """A published, signature-checked cache entry."""

    @property
    def size(self) -> int: ...

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, start+length)`` (to the end when ``length`` is None), in chunks of at most
        :data:`CHUNK`. The iterator holds a backend connection until exhausted or closed."""
        ...

    def redirect_url(self, filename: str) -> str | None:
        """A URL a client may download the asset from directly (presigned S3 or CDN), named
        ``filename``; None when the backend cannot hand one out (OCI) or it failed."""
        ...


class AssetCache(Protocol):
    def get(self, key: str) -> CachedAsset | None:
        """The entry, or None on a miss: absent, or present without a valid signature (such an
        entry is never served and gets rebuilt). Raises UnavailableError when the backend is down."""
        ...

    def put(self, key: str, path: Path, info: AssetInfo) -> None:
        """Uploads, signs and only then publishes ``path`` under ``key``: until this returns, a
        ``get`` sees the previous state (miss), never a partial or unsigned entry."""
        ...
