"""CDN front for the S3 cache: presigned S3 URLs are rewritten to go through a CDN.

As upstream (internal/asset/cache/cdn): strip ``trimPrefix`` from the start of the URL path (the
bucket, for path-style URLs) and replace the host; the signed query string is kept byte for byte,
so the CDN must forward to S3 with the original host and path for the signature to validate.
Upstream assigns the configured host verbatim (a scheme in it yields a broken URL); we also accept
``https://cdn.example.com``, whose scheme then replaces the presigned URL's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common.cache.base import AssetCache, AssetInfo, CachedAsset


def rewrite_url(url: str, host: str, trim_prefix: str) -> str:
    parts = urlsplit(url)
    path = parts.path.removeprefix(trim_prefix) if trim_prefix else parts.path
    scheme, netloc = parts.scheme, parts.netloc
    if host:
        if "://" in host:
            configured = urlsplit(host)
            scheme, netloc = configured.scheme, configured.netloc
            base = configured.path.rstrip("/")
            if base:
                path = base + (path if path.startswith("/") else "/" + path)
        else:
            netloc = host.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


@dataclass(frozen=True)
class CDNAsset:
    underlying: CachedAsset
    host: str
    trim_prefix: str

    @property
    def size(self) -> int:
        return self.underlying.size

    @property
    def digest(self) -> str | None:
        """The underlying asset's validator (``api.rendering``): the CDN serves the same bytes."""
        found: str | None = getattr(self.underlying, "digest", None)
        return found

    @property
    def modified(self) -> datetime | None:
        found: datetime | None = getattr(self.underlying, "modified", None)
        return found

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.underlying.read(start, length)

    def redirect_url(self, filename: str) -> str | None:
        url = self.underlying.redirect_url(filename)
        return None if url is None else rewrite_url(url, self.host, self.trim_prefix)


class CDNCache:
    def __init__(self, underlying: AssetCache, host: str, trim_prefix: str) -> None:
        if not host.strip():
            raise ValueError("cache.cdn.host must be set when the CDN is enabled")
        if not trim_prefix.strip():
            raise ValueError("cache.cdn.trimPrefix must be set when the CDN is enabled")
        self.underlying = underlying
        self.host = host.strip()
        self.trim_prefix = trim_prefix.strip()

    def get(self, key: str) -> CachedAsset | None:
        asset = self.underlying.get(key)
        return None if asset is None else CDNAsset(asset, self.host, self.trim_prefix)

    def put(self, key: str, path: Path, info: AssetInfo) -> None:
        self.underlying.put(key, path, info)


__all__ = ["CDNAsset", "CDNCache", "rewrite_url"]
