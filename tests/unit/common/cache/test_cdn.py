"""CDN URL rewriting (upstream's docs/cache.md example) and how build_cache composes the backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.cache import (
    AssetInfo,
    CDNCache,
    FileCacheSigner,
    OCICache,
    S3Cache,
    build_cache,
    generate_key_pem,
)
from common.cache.cdn import rewrite_url
from common.config import Config, ConfigError

HASH = "9bd6614d6687009c562d4ad92f89fbb603d843cda17fea099a00d7df80344f31"
QUERY = (
    "response-content-disposition=attachment%3B%20filename%3D%22metal-amd64.iso%22"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA6Z4C7N3S2JD3JH9A%2F20250101%2Feu-central-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=0123456789abcdef"
)
# upstream docs/cache.md: MinIO on localhost:9000, bucket image-factory, nginx "CDN" on localhost:3000
PRESIGNED = f"http://localhost:9000/image-factory/assets/{HASH}?{QUERY}"


def test_upstream_example() -> None:
    assert (
        rewrite_url(PRESIGNED, "localhost:3000", "/image-factory")
        == f"http://localhost:3000/assets/{HASH}?{QUERY}"
    )


def test_signed_query_is_kept_byte_for_byte() -> None:
    rewritten = rewrite_url(PRESIGNED, "cdn.example.com", "/image-factory")
    assert rewritten.endswith("?" + QUERY)
    assert rewritten.startswith("http://cdn.example.com/assets/")


def test_host_with_scheme_sets_the_scheme() -> None:
    assert (
        rewrite_url(PRESIGNED, "https://cdn.example.com", "/image-factory")
        == f"https://cdn.example.com/assets/{HASH}?{QUERY}"
    )
    assert (
        rewrite_url(PRESIGNED, "https://cdn.example.com/factory/", "/image-factory")
        == f"https://cdn.example.com/factory/assets/{HASH}?{QUERY}"
    )


def test_prefix_is_only_trimmed_at_the_start() -> None:
    url = f"https://s3.example.com/other/image-factory/assets/{HASH}?{QUERY}"
    assert (
        rewrite_url(url, "cdn.example.com", "/image-factory")
        == f"https://cdn.example.com/other/image-factory/assets/{HASH}?{QUERY}"
    )


@dataclass
class FakeAsset:
    url: str | None
    size: int = 3

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        yield b"abc"[start : None if length is None else start + length]

    def redirect_url(self, filename: str) -> str | None:
        return None if self.url is None else self.url.replace("NAME", filename)


@dataclass
class FakeCache:
    assets: dict[str, FakeAsset] = field(default_factory=dict)
    puts: list[tuple[str, Path, AssetInfo]] = field(default_factory=list)

    def get(self, key: str) -> FakeAsset | None:
        return self.assets.get(key)

    def put(self, key: str, path: Path, info: AssetInfo) -> None:
        self.puts.append((key, path, info))


def test_cdn_cache_wraps_only_redirects() -> None:
    underlying = FakeCache(
        {
            "s3": FakeAsset("http://s3:9000/bucket/assets/s3?name=NAME&X-Amz-Signature=x"),
            "oci": FakeAsset(None),
        }
    )
    cache = CDNCache(underlying, "cdn:3000", "/bucket")
    assert cache.get("absent") is None
    asset = cache.get("s3")
    assert asset is not None
    assert asset.size == 3
    assert b"".join(asset.read(1)) == b"bc"
    assert asset.redirect_url("x.iso") == "http://cdn:3000/assets/s3?name=x.iso&X-Amz-Signature=x"
    oci = cache.get("oci")
    assert oci is not None and oci.redirect_url("x.iso") is None  # not redirectable: stays streamed
    info = AssetInfo("x.iso", "application/x-iso9660-image")
    cache.put("k", Path("/tmp/x"), info)
    assert underlying.puts == [("k", Path("/tmp/x"), info)]


@pytest.mark.parametrize(("host", "prefix"), [("", "/bucket"), ("cdn", ""), ("  ", " ")])
def test_cdn_cache_requires_host_and_prefix(host: str, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"cache\.cdn"):
        CDNCache(FakeCache(), host, prefix)


def _config(*, s3: bool = False, cdn: bool = False, host: str = "cdn:3000", prefix: str = "/b") -> Config:
    config = Config()
    config.cache.oci.registry = "127.0.0.1:1"
    config.cache.oci.insecure = True
    config.cache.s3.enabled = s3
    config.cache.s3.endpoint = "127.0.0.1:1"
    config.cache.s3.region = "us-east-1"
    config.cache.cdn.enabled = cdn
    config.cache.cdn.host = host
    config.cache.cdn.trimPrefix = prefix
    return config


SIGNER = FileCacheSigner.from_pem(generate_key_pem())


def test_build_cache_composition() -> None:
    assert isinstance(build_cache(_config(), SIGNER), OCICache)
    s3 = build_cache(_config(s3=True), SIGNER)
    assert isinstance(s3, S3Cache) and isinstance(s3.oci, OCICache)
    cdn = build_cache(_config(s3=True, cdn=True), SIGNER)
    assert isinstance(cdn, CDNCache) and isinstance(cdn.underlying, S3Cache)
    assert (cdn.host, cdn.trim_prefix) == ("cdn:3000", "/b")
    # CDN without S3 is a no-op: OCI assets are never redirected
    assert isinstance(build_cache(_config(cdn=True), SIGNER), OCICache)


@pytest.mark.parametrize("s3", [True, False])
@pytest.mark.parametrize(("host", "prefix"), [("", "/b"), ("cdn:3000", "")])
def test_build_cache_refuses_incomplete_cdn(s3: bool, host: str, prefix: str) -> None:
    """Upstream refuses to start with an incomplete CDN section, with or without S3."""
    with pytest.raises(ConfigError, match=r"cache\.cdn\.host and cache\.cdn\.trimPrefix"):
        build_cache(_config(s3=s3, cdn=True, host=host, prefix=prefix), SIGNER)
