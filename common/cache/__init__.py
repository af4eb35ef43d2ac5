"""Asset caches (OCI registry, S3, CDN) composed from the configuration in one place."""

from __future__ import annotations

from common.cache.base import CHUNK, AssetCache, AssetInfo, CachedAsset
from common.cache.cdn import CDNCache
from common.cache.oci import OCIAsset, OCICache
from common.cache.s3 import S3Asset, S3Cache
from common.cache.signing import CacheSigner, FileCacheSigner, SigningKeyError, generate_key_pem
from common.config import Config, ConfigError
from common.metrics import NULL_METRICS, Metrics


def build_cache(config: Config, signer: CacheSigner, metrics: Metrics = NULL_METRICS) -> AssetCache:
    """OCI always; S3 in front of it when enabled; the CDN in front of S3 (a no-op without S3).

    Like upstream, an enabled CDN without host or trimPrefix refuses to start even if S3 is off.
    """
    options = config.cache
    cdn = options.cdn
    if cdn.enabled and not (cdn.host.strip() and cdn.trimPrefix.strip()):
        raise ConfigError(
            "cache.cdn.host and cache.cdn.trimPrefix: both are required when cache.cdn.enabled is true"
        )
    oci = OCICache.from_options(options.oci, signer)
    if not options.s3.enabled:
        return oci
    s3 = S3Cache(oci, options.s3, metrics=metrics)
    return CDNCache(s3, cdn.host, cdn.trimPrefix) if cdn.enabled else s3


__all__ = [
    "CHUNK",
    "AssetCache",
    "AssetInfo",
    "CDNCache",
    "CacheSigner",
    "CachedAsset",
    "FileCacheSigner",
    "OCIAsset",
    "OCICache",
    "S3Asset",
    "S3Cache",
    "SigningKeyError",
    "build_cache",
    "generate_key_pem",
]
