"""Checksums of cached assets (``<path>.sha256``, ``<path>.sha512``), served without rebuilding.

Both come from the signed OCI entry, so they are exactly as trustworthy as the entry: the sha256 is
the digest of the entry's one layer (computed by the registry on upload and covered by the signed
manifest), the sha512 an annotation written when the asset is published
(:data:`~common.cache.oci.ANNOTATION_SHA512`), covered by the same signature. A tampered entry fails
its signature check and reads as a miss (``OCICache.get``), so its checksum is never served: the
asset is rebuilt first. Entries published before the annotation existed get their sha512 computed
once, from a digest-checked full read of the layer, and stored by re-publishing the entry signed.

Upstream (``siderolabs/image-factory``) answers these paths 402 in its community edition (#283).
"""

from __future__ import annotations

import hashlib
import logging
import re

from common.cache.base import AssetCache, CachedAsset
from common.cache.cdn import CDNAsset, CDNCache
from common.cache.oci import ANNOTATION_SHA512, OCIAsset, OCICache
from common.cache.s3 import S3Asset, S3Cache
from common.errors import FactoryError

log = logging.getLogger(__name__)

ALGORITHMS = ("sha256", "sha512")
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}


def signed_entry(asset: CachedAsset) -> OCIAsset | None:
    """The signed OCI entry behind ``asset`` (through the CDN and S3 wrappers), if it has one."""
    found: object = asset
    while True:
        if isinstance(found, OCIAsset):
            return found
        if isinstance(found, CDNAsset):
            found = found.underlying
        elif isinstance(found, S3Asset) and found.fallback is not None:
            found = found.fallback
        else:
            return None  # an upstream S3 pointer entry: the signed entry holds only the ETag


def oci_cache(cache: AssetCache) -> OCICache | None:
    """The OCI cache inside the composed one (``common.cache.build_cache``)."""
    found: object = cache
    while True:
        if isinstance(found, OCICache):
            return found
        if isinstance(found, CDNCache):
            found = found.underlying
        elif isinstance(found, S3Cache):
            found = found.oci
        else:
            return None


class AssetChecksums:
    def __init__(self, cache: AssetCache) -> None:
        self.oci = oci_cache(cache)

    def hexdigest(self, key: str, asset: CachedAsset, algorithm: str) -> str:
        """The hex digest of the bytes of ``asset`` (cached under ``key``) with ``algorithm``."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported checksum algorithm {algorithm!r}")
        entry = signed_entry(asset)
        if entry is None:  # read from S3, pinned by the ETag that the signed pointer names
            return _digest(asset, algorithm)
        if algorithm == "sha256" and entry.layer_digest.startswith("sha256:"):
            return entry.layer_digest.removeprefix("sha256:")
        stored = entry.annotations.get(ANNOTATION_SHA512) if algorithm == "sha512" else None
        if stored is not None and _HEX[algorithm].match(stored):
            return stored
        value = _digest(entry, algorithm)  # a full read: checked against the layer digest as it streams
        if algorithm == "sha512" and self.oci is not None:
            try:
                self.oci.annotate(key, entry, {ANNOTATION_SHA512: value})
            except FactoryError as exc:  # served anyway; stored on a later request
                log.warning("cannot store the asset's checksum", extra={"key": key, "error": exc.message})
        return value


def _digest(asset: CachedAsset, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    chunks = asset.read()
    try:
        for chunk in chunks:
            digest.update(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return digest.hexdigest()
