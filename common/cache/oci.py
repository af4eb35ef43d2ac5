"""The OCI registry asset cache, in upstream's format so either factory can read the other's entries.

An entry is tag ``<key>`` → a Docker schema 2 manifest with exactly one ``application/data`` layer
whose blob is the raw asset, cosign-signed (legacy ``sha256-<hex>.sig`` tag) with the cache key.

Two deliberate differences from upstream:

* publishing is atomic: blob, config and manifest (by digest, untagged) are uploaded and the
  signature pushed *before* the tag is written. Upstream tags first and signs afterwards, so a
  crash in between leaves a tagged, unsigned entry (harmless there, as it reads as a miss, but
  it costs a rebuild).
* the manifest carries annotations (download name, media type, and the S3 ETag in S3 mode).
  They are covered by the signature since the signed manifest digest covers every byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common.cache.base import CHUNK, AssetInfo
from common.cache.signing import CacheSigner
from common.config.options import RepositoryOptions
from common.cosign.registry import (
    SignatureLayer,
    has_valid_legacy_signature,
    push_legacy_signatures,
    simple_signing_payload,
)
from common.registry.client import DOCKER_CONFIG, DOCKER_MANIFEST, RegistryClient, RegistryError

log = logging.getLogger(__name__)

LAYER_MEDIA_TYPE = "application/data"
ANNOTATION_FILENAME = "org.opencontainers.image.title"
ANNOTATION_CONTENT_TYPE = "dev.talos.image-factory.asset.content-type"
ANNOTATION_S3_ETAG = "dev.talos.image-factory.asset.s3-etag"
# The asset's sha512 (hex), computed when it is published: signed with the entry, served as
# ``<path>.sha512`` (the sha256 is the layer digest itself). See common/cache/checksums.py.
ANNOTATION_SHA512 = "dev.talos.image-factory.asset.sha512"


@dataclass(frozen=True)
class OCIAsset:
    """A verified entry: the layer blob is streamed from the registry on demand."""

    client: RegistryClient
    manifest_digest: str
    layer_digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def info(self) -> AssetInfo | None:
        """What the publisher stored, or None for entries written by upstream (no annotations)."""
        filename = self.annotations.get(ANNOTATION_FILENAME)
        content_type = self.annotations.get(ANNOTATION_CONTENT_TYPE)
        if filename is None or content_type is None:
            return None
        return AssetInfo(filename=filename, content_type=content_type)

    @property
    def digest(self) -> str:
        """The bytes' digest (the layer's): a strong validator for HTTP caches."""
        return self.layer_digest

    @property
    def modified(self) -> datetime | None:
        """When the bytes were stored; the registry does not say (the image config's dates are fixed)."""
        return None

    @property
    def s3_etag(self) -> str | None:
        return self.annotations.get(ANNOTATION_S3_ETAG)

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        length = range_length(start, length, self.size)
        if length == 0:
            return iter(())
        if start == 0 and length == self.size:
            return self._read_verified()
        return self.client.stream_blob(self.layer_digest, CHUNK, start=start, length=length)

    def _read_verified(self) -> Iterator[bytes]:
        """Full reads are digest-checked: a corrupt blob aborts the download instead of completing it."""
        digest = hashlib.sha256()
        size = 0
        chunks = self.client.stream_blob(self.layer_digest, CHUNK)
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        finally:
            chunks.close()
        if size != self.size or "sha256:" + digest.hexdigest() != self.layer_digest:
            raise RegistryError(f"cached blob {self.client.repo.path}@{self.layer_digest} is corrupt")

    def redirect_url(self, filename: str) -> str | None:
        return None


class OCICache:
    def __init__(self, client: RegistryClient, signer: CacheSigner) -> None:
        self.client = client
        self.signer = signer

    @classmethod
    def from_options(cls, repo: RepositoryOptions, signer: CacheSigner) -> OCICache:
        return cls(RegistryClient(repo), signer)

    @property
    def docker_reference(self) -> str:
        return self.client.repo.reference

    def get(self, key: str) -> OCIAsset | None:
        digest = self.client.resolve(key, missing=(404, 403))
        if digest is None:
            return None
        if not self._signed(digest):
            log.warning(
                "cached asset has no valid signature; treating it as a miss",
                extra={"ref": f"{self.docker_reference}:{key}", "digest": digest},
            )
            return None
        manifest = self.client.get_manifest(digest)
        if manifest is None:  # deleted between HEAD and GET
            return None
        layers = manifest.document.get("layers") or []
        if manifest.is_index or len(layers) != 1:
            log.warning(
                "cached asset is not a single-layer image; treating it as a miss",
                extra={"ref": f"{self.docker_reference}:{key}", "layers": len(layers)},
            )
            return None
        annotations = manifest.document.get("annotations") or {}
        return OCIAsset(
            client=self.client,
            manifest_digest=digest,
            layer_digest=str(layers[0]["digest"]),
            size=int(layers[0]["size"]),
            annotations={str(k): str(v) for k, v in annotations.items()},
        )

    def put(self, key: str, path: Path, info: AssetInfo, extra: Mapping[str, str] | None = None) -> None:
        """Publishes ``path``; ``extra`` annotations are stored (and signed) with it."""
        layer_digest, size = self.client.push_blob_file(path)
        config = _config(layer_digest)
        config_digest = self.client.push_blob(config)
        annotations = {ANNOTATION_FILENAME: info.filename, ANNOTATION_CONTENT_TYPE: info.content_type}
        annotations[ANNOTATION_SHA512] = _file_sha512(path)
        annotations.update(extra or {})
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "size": size, "digest": layer_digest}],
            "annotations": annotations,
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.client.put_manifest_bytes(digest, body, DOCKER_MANIFEST)
        self._sign(digest)
        self.client.put_manifest_bytes(key, body, DOCKER_MANIFEST)
        log.info("published cached asset", extra={"ref": f"{self.docker_reference}:{key}", "digest": digest})

    def annotate(self, key: str, entry: OCIAsset, extra: Mapping[str, str]) -> bool:
        """Re-publishes ``entry`` with ``extra`` annotations, signed before it is tagged, if ``key``
        still names it (a rebuild in between wins); the blob is not touched. Returns whether it did."""
        manifest = self.client.get_manifest(entry.manifest_digest)
        if manifest is None:
            return False
        document = manifest.document
        document["annotations"] = {**(document.get("annotations") or {}), **extra}
        body = json.dumps(document, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.client.put_manifest_bytes(digest, body, manifest.media_type)
        self._sign(digest)
        if self.client.resolve(key, missing=(404, 403)) != entry.manifest_digest:
            return False
        self.client.put_manifest_bytes(key, body, manifest.media_type)
        return True

    def _sign(self, digest: str) -> None:
        payload = simple_signing_payload(self.docker_reference, digest)
        push_legacy_signatures(self.client, digest, [SignatureLayer(payload, self.signer.sign(payload))])

    def _signed(self, digest: str) -> bool:
        return has_valid_legacy_signature(self.client, digest, self.signer.verify)


def _file_sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _config(layer_digest: str) -> bytes:
    """The image config go-containerregistry writes for ``empty.Image`` plus one layer."""
    return json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()


def range_length(start: int, length: int | None, size: int) -> int:
    """The number of bytes ``read(start, length)`` returns from an object of ``size`` bytes."""
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"invalid byte range start={start} length={length}")
    available = max(size - start, 0)
    return available if length is None else min(length, available)


__all__ = ["ANNOTATION_S3_ETAG", "LAYER_MEDIA_TYPE", "OCIAsset", "OCICache", "range_length"]
