"""Copies one image, by digest, from a repository to another, with its cosign signatures.

Children before parents: blobs, then platform manifests, then the index, then tags. A manifest the
destination already has (``HEAD`` by digest) was therefore completed by an earlier run and is skipped
with everything under it, which makes an interrupted mirror resumable and a repeated one copy nothing.
Blob bytes stream from source to destination (never held in memory); the destination registry checks
each upload against its digest (distribution spec, "Pushing a blob monolithically"), and manifests are
digest-checked by :meth:`RegistryClient.get_manifest` as they are read.

Signatures come in the two layouts of :mod:`common.cosign.registry`: the legacy ``sha256-<hex>.sig``
tag, and Sigstore bundles attached as referrers (the referrers API, or the ``sha256-<hex>`` referrers
tag index on registries without it, e.g. distribution 2.8). Both are copied so that a factory pointed
at the mirror verifies images exactly as it would at the source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.cosign.registry import referrers_tag, signature_tag
from common.registry.client import OCI_INDEX, Manifest, RegistryClient, RegistryError

# Layers registries are not allowed to redistribute (Windows base layers): never in a Talos release,
# and a source registry would not serve them anyway.
FOREIGN_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)


@dataclass
class Tally:
    """What a copy did; shared by the threads of one mirror run."""

    manifests_copied: int = 0
    manifests_present: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    tags_set: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def copied_anything(self) -> bool:
        return bool(self.manifests_copied or self.blobs_copied or self.tags_set)


class ImageCopier:
    """Copies images between two registries; ``source(repo)`` and ``destination(repo)`` give clients."""

    def __init__(
        self,
        source: Callable[[str], RegistryClient],
        destination: Callable[[str], RegistryClient],
    ) -> None:
        self.source = source
        self.destination = destination

    def copy(self, repository: str, digest: str, tags: list[str], tally: Tally) -> None:
        """Copies ``repository@digest``, its signatures, and points ``tags`` at it on the destination."""
        src, dst = self.source(repository), self.destination(repository)
        self._manifest(src, dst, digest, tally)
        for tag in tags:
            self._tag(src, dst, tag, digest, tally)
        self._signatures(src, dst, digest, tally)

    # --- manifests and blobs -----------------------------------------------------------------

    def _manifest(self, src: RegistryClient, dst: RegistryClient, digest: str, tally: Tally) -> Manifest:
        """Copies the manifest (or index) ``digest`` and all it references; returns it."""
        present = dst.get_manifest(digest)
        if present is not None:
            tally.add(manifests_present=1)
            return present
        manifest = src.get_manifest(digest)
        if manifest is None:
            raise RegistryError(f"{src.repo.reference}@{digest} does not exist in the source registry")
        document = manifest.document
        if manifest.is_index:
            for child in document.get("manifests", []):
                self._manifest(src, dst, str(child["digest"]), tally)
        else:
            descriptors = [document["config"], *document.get("layers", [])]
            for descriptor in descriptors:
                if descriptor.get("mediaType") not in FOREIGN_LAYERS:
                    self._blob(src, dst, descriptor, tally)
        dst.put_manifest_bytes(digest, manifest.body, manifest.media_type)
        tally.add(manifests_copied=1)
        return manifest

    def _blob(
        self, src: RegistryClient, dst: RegistryClient, descriptor: dict[str, Any], tally: Tally
    ) -> None:
        digest, size = str(descriptor["digest"]), int(descriptor.get("size", 0))
        if dst.blob_exists(digest):
            tally.add(blobs_present=1)
            return
        dst.push_blob_chunks(digest, size, lambda: src.stream_blob(digest))
        tally.add(blobs_copied=1, bytes_copied=size)

    def _tag(self, src: RegistryClient, dst: RegistryClient, tag: str, digest: str, tally: Tally) -> None:
        if dst.resolve(tag) == digest:
            return
        manifest = self._manifest(src, dst, digest, tally)
        dst.put_manifest_bytes(tag, manifest.body, manifest.media_type)
        tally.add(tags_set=1)

    # --- signatures --------------------------------------------------------------------------

    def _signatures(self, src: RegistryClient, dst: RegistryClient, digest: str, tally: Tally) -> None:
        legacy = signature_tag(digest)
        signatures = src.resolve(legacy)
        if signatures is not None:
            self._tag(src, dst, legacy, signatures, tally)
        fallback = referrers_tag(digest)
        index_digest = src.resolve(fallback)
        if index_digest is not None:  # the referrers tag index: copying it copies every referrer
            self._tag(src, dst, fallback, index_digest, tally)
            return
        index = src.get_referrers(digest)
        entries = [e for e in (index or {}).get("manifests", []) if "digest" in e]
        for entry in entries:  # a registry with the referrers API indexes them by their subject
            self._manifest(src, dst, str(entry["digest"]), tally)
        if entries and dst.get_referrers(digest) is None:  # without it, clients read the tag index
            body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            dst.put_manifest(fallback, body, OCI_INDEX)
            tally.add(tags_set=1)
