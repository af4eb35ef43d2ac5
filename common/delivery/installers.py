"""Installer images through the registry frontend: ``<image>/<schematic>:<version>`` built on pull.

Upstream (``siderolabs/image-factory:internal/frontend/http/registry.go``) builds an installer per
architecture inside the manifest request, pushes an image index to ``artifacts.installer.internal``,
signs it with the cache key, and forwards the client to it by digest. Here the per-architecture
installers are ordinary builds (``installer-<arch>.tar``, one build key each, the same cluster-wide
single-flight pipeline, cache and workers as ``/image``) waited for together with one waiter; the
index is then published from the cached archives (byte ranges streamed into blob uploads, so the
API holds no image), signed, and only then tagged. A tag is trusted only while its signature
verifies; a tag without a valid signature is published again, never forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from cachetools import TTLCache

from common.cache.base import CachedAsset
from common.cache.signing import CacheSigner
from common.config.options import RepositoryOptions
from common.cosign.registry import (
    SignatureLayer,
    has_valid_legacy_signature,
    push_legacy_signatures,
    push_referrer,
    simple_signing_payload,
)
from common.cosign.types import SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE
from common.delivery.service import Delivery, Located, Pending
from common.errors import (
    FactoryError,
    InvalidInputError,
    NotFoundError,
    RegistryAPIError,
    UnavailableError,
)
from common.gojson import marshal
from common.registry.client import DOCKER_CONFIG, DOCKER_MANIFEST, OCI_INDEX, RegistryClient
from common.registry.docker_archive import ArchiveError, open_archive
from common.talos import version as v

log = logging.getLogger(__name__)

ARCHITECTURES = ("amd64", "arm64")  # upstream's order in the index
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
VERIFIED_TTL = 30.0  # seconds a verified tag → digest is reused without asking the registry again
_PLATFORM = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # distribution-spec <reference> as a tag


class StillBuildingError(UnavailableError):
    """503 with a ``Retry-After`` from the build's ETA: pullers retry and join the same builds."""

    def __init__(self, message: str, eta: float | None) -> None:
        super().__init__(message)
        self.retry_after = int(min(30, max(5, (eta or 20) / 2)))


@dataclass(frozen=True)
class InstallerName:
    """An image name of upstream's: ``installer[-secureboot]`` (metal) or
    ``<platform>-installer[-secureboot]``."""

    image: str
    platform: str
    secureboot: bool

    def asset_path(self, arch: str) -> str:
        """The ``/image`` path of the same installer for one architecture."""
        suffix = "-secureboot" if self.secureboot else ""
        if not self.platform:
            return f"installer-{arch}{suffix}.tar"
        return f"{self.platform}-installer-{arch}{suffix}.tar"


def parse_image_name(image: str) -> InstallerName:
    """400 ``invalid image: <name>`` (upstream's text) for anything else."""
    name, secureboot = image, False
    if name.endswith("-secureboot"):
        name, secureboot = name.removesuffix("-secureboot"), True
    if name == "installer":
        return InstallerName(image, "", secureboot)
    platform = name.removesuffix("-installer")
    if name.endswith("-installer") and _PLATFORM.match(platform):
        return InstallerName(image, platform, secureboot)
    raise InvalidInputError(f"invalid image: {image}")


def is_plain_tag(ref: str) -> bool:
    """A tag that names no Talos version, such as cosign's ``sha256-<hex>.sig`` (what ``cosign verify
    <factory>/<image>/<schematic>:<version>`` reads next) or the referrers tag ``sha256-<hex>``: forwarded
    to the published repository as is, as upstream forwards every tag not starting with ``v``."""
    if ref == "latest" or not _TAG.match(ref):
        return False
    try:
        v.version_from_path(ref)
    except InvalidInputError:
        return True
    return False


@dataclass(frozen=True)
class Published:
    digest: str
    media_type: str
    size: int


class InstallerImages:
    """The installer use case: check, build on a miss, publish, and say what to forward to."""

    def __init__(self, delivery: Delivery, locks: redis.Redis | None = None) -> None:
        self.delivery = delivery
        self.services = delivery.services
        self.locks = locks or self.services.redis
        self._guard = threading.Lock()
        self._clients: TTLCache[str, RegistryClient] = TTLCache(4096, 3600)
        self._verified: TTLCache[tuple[str, str], str] = TTLCache(10_000, VERIFIED_TTL)
        self._background: ThreadPoolExecutor | None = None
        self._background_pid = 0

    # --- names ----------------------------------------------------------------------------------

    def check(self, schematic_id: str, image: str) -> InstallerName:
        """The schematic first (404), then the image name (400), as upstream."""
        try:
            self.services.schematics.get(schematic_id)
        except NotFoundError:
            raise RegistryAPIError(404, "NAME_UNKNOWN", f'schematic ID "{schematic_id}" not found') from None
        return parse_image_name(image)

    def repository(self, image: str, schematic_id: str, *, external: bool = False) -> RepositoryOptions:
        """``<registry>/<namespace>/<repository>/<image>/<schematic>``, internal or external."""
        base = self.services.config.artifacts.installer.external if external else self.internal
        return RepositoryOptions(
            registry=base.registry,
            namespace=base.path,
            repository=f"{image}/{schematic_id}",
            insecure=base.insecure,
        )

    @property
    def internal(self) -> RepositoryOptions:
        return self.services.config.artifacts.installer.internal

    @property
    def redirects(self) -> bool:
        """Redirect (307) to ``artifacts.installer.external`` when set, else proxy the internal one."""
        return bool(self.services.config.artifacts.installer.external.registry)

    def client(self, repo: RepositoryOptions) -> RegistryClient:
        with self._guard:
            found = self._clients.get(repo.reference)
            if found is None:
                found = self._clients[repo.reference] = RegistryClient(repo)
            return found

    def tag_for(self, ref: str) -> str:
        """``latest`` → the newest stable Talos version (upstream HEAD); otherwise a Talos version."""
        if ref == "latest":
            stable = [found for found in self.services.artifacts.talos_versions() if not found.prerelease]
            if not stable:
                raise RegistryAPIError(404, "MANIFEST_UNKNOWN", "no stable Talos version is available")
            return v.tag(max(stable))
        try:
            return v.tag(v.version_from_path(ref))
        except InvalidInputError:
            raise RegistryAPIError(
                404, "MANIFEST_UNKNOWN", f"manifest unknown: {ref!r} is neither a Talos version nor a digest"
            ) from None

    # --- ahead of the first pull ----------------------------------------------------------------

    def prebuild(self, schematic_id: str) -> int:
        """Queues (without waiting) the installer builds ``build.prebuildInstallers`` asks for, every
        architecture, for one schematic; returns how many builds were queued or already cached.

        Only the per-architecture builds are made ahead: they are shared by every image name of
        the same platform (``installer`` and ``metal-installer``), and publishing their index on
        the first pull takes seconds. A version that is not available is logged, not raised.
        """
        count = 0
        for version in self.services.config.build.prebuildInstallers:
            try:
                tag = self.tag_for(version)
                targets = self._locate(schematic_id, tag, InstallerName("installer", "", False))
                self.delivery.obtain_all(targets, wait=False)
                count += len(targets)
            except FactoryError as exc:
                log.warning(
                    "cannot build installers ahead",
                    extra={"schematic": schematic_id, "version": version, "error": exc.message},
                )
        return count

    def prebuild_later(self, schematic_id: str) -> None:
        """:meth:`prebuild` on a background thread of this process, so creating a schematic stays fast."""
        if not self.services.config.build.prebuildInstallers:
            return
        with self._guard:
            if self._background is None or self._background_pid != os.getpid():
                self._background = ThreadPoolExecutor(2, thread_name_prefix="prebuild")
                self._background_pid = os.getpid()
            self._background.submit(self._prebuild_quietly, schematic_id)

    def _prebuild_quietly(self, schematic_id: str) -> None:
        try:
            self.prebuild(schematic_id)
        except Exception:
            log.exception("building installers ahead failed", extra={"schematic": schematic_id})

    # --- manifests ------------------------------------------------------------------------------

    def manifest(self, schematic_id: str, image: str, ref: str) -> str:
        """The reference to forward to: ``ref`` itself for digests, else the signed index's digest
        (built and published first when missing or not validly signed)."""
        name = self.check(schematic_id, image)
        if ref.startswith("sha256:") or is_plain_tag(ref):
            return ref
        tag = self.tag_for(ref)
        client = self.client(self.repository(image, schematic_id))
        found = self._verified_tag(client, tag)
        if found:
            return found
        targets = self._locate(schematic_id, tag, name)
        budget = self.services.config.build.registryWaitTimeout.total_seconds()
        waited = self.delivery.obtain_all(targets, timeout=budget)
        if isinstance(waited, Pending):
            raise StillBuildingError(
                f"the {image} installer for {tag} is still being built; retry",
                self.delivery.eta(waited.record),
            )
        return self._publish_once(client, tag, list(zip(targets, waited, strict=True)))

    def _verified_tag(self, client: RegistryClient, tag: str) -> str | None:
        memo = (client.repo.reference, tag)
        with self._guard:
            found = self._verified.get(memo)
        if found:
            return found
        digest = client.resolve(tag, missing=(404, 403))
        if digest is None:
            return None
        if not has_valid_legacy_signature(client, digest, self.services.cache_signer.verify):
            log.error(
                "installer index has no valid signature; publishing it again",
                extra={"ref": f"{client.repo.reference}:{tag}", "digest": digest},
            )
            return None
        with self._guard:
            self._verified[memo] = digest
        return digest

    def _locate(self, schematic_id: str, tag: str, name: InstallerName) -> list[Located]:
        """One build per architecture the release provides (an amd64-only release: amd64 only)."""
        targets: list[Located] = []
        missing: list[NotFoundError] = []
        for arch in ARCHITECTURES:
            try:
                targets.append(self.delivery.locate(schematic_id, tag, name.asset_path(arch)))
            except NotFoundError as exc:
                missing.append(exc)
        if not targets:
            raise RegistryAPIError(404, "MANIFEST_UNKNOWN", missing[0].message)
        return targets

    def _publish_once(
        self, client: RegistryClient, tag: str, built: list[tuple[Located, CachedAsset]]
    ) -> str:
        """One publication per tag across every API process (a Redis lock), re-checked inside it."""
        ref = f"{client.repo.reference}:{tag}"
        name = "if:installer:publish:" + hashlib.sha256(ref.encode()).hexdigest()
        timeout = self.services.config.build.timeout.total_seconds()
        try:
            lock = self.locks.lock(name, timeout=timeout, blocking_timeout=timeout)
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise UnavailableError("redis is unavailable") from exc
        if not acquired:
            raise UnavailableError("another publication of this installer is taking too long; retry")
        try:
            found = self._verified_tag(client, tag)
            if found:
                return found
            return publish_index(client, tag, built, self.services.cache_signer)
        finally:
            try:
                lock.release()
            except redis.RedisError:
                log.warning("cannot release the installer publication lock; it expires")


def publish_index(
    client: RegistryClient, tag: str, built: Sequence[tuple[Located, CachedAsset]], signer: CacheSigner
) -> str:
    """Pushes each architecture's image and an OCI index over them, signs the index, then tags it."""
    entries = []
    for target, asset in built:
        image = publish_image(client, asset)
        entries.append(
            {
                "mediaType": image.media_type,
                "size": image.size,
                "digest": image.digest,
                "platform": {"architecture": target.plan.profile.arch, "os": "linux"},
            }
        )
    index = marshal({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    digest = "sha256:" + hashlib.sha256(index).hexdigest()
    client.put_manifest_bytes(digest, index, OCI_INDEX)
    sign_index(client, Published(digest, OCI_INDEX, len(index)), signer)
    client.put_manifest_bytes(tag, index, OCI_INDEX)
    log.info("published installer", extra={"ref": f"{client.repo.reference}:{tag}", "digest": digest})
    return digest


def sign_index(client: RegistryClient, index: Published, signer: CacheSigner) -> None:
    """cosign's legacy ``.sig`` (what ``cosign verify --key`` reads), and the same signature as an
    OCI 1.1 referrer of the index, so it is discoverable through ``/referrers/<digest>``."""
    payload = simple_signing_payload(client.repo.reference, index.digest)
    signature = signer.sign(payload)
    push_legacy_signatures(client, index.digest, [SignatureLayer(payload, signature)])
    subject = {"mediaType": index.media_type, "size": index.size, "digest": index.digest}
    annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
    push_referrer(
        client, subject, COSIGN_SIGNATURE_ARTIFACT, [(payload, SIMPLE_SIGNING_MEDIA_TYPE, annotations)]
    )


def publish_image(client: RegistryClient, asset: CachedAsset) -> Published:
    """One installer image from its cached docker-save archive: blobs, then its manifest by digest.

    The manifest keeps the archive's Docker schema 2 media types, as go-containerregistry's
    ``tarball.Image`` gives them to upstream's index.
    """
    try:
        archive = open_archive(lambda start, length: asset.read(start, length), asset.size)
        config = archive.small(archive.config_name)
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        if archive.config_name not in (config_digest, config_digest.removeprefix("sha256:")):
            raise ArchiveError(f"config {archive.config_name} does not match its digest {config_digest}")
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    except (ValueError, AttributeError) as exc:
        raise ArchiveError(f"unreadable installer image config: {exc}") from exc
    client.push_blob(config, config_digest)
    layers: list[dict[str, Any]] = []
    for i, name in enumerate(archive.layer_names):
        member = archive.members.get(name)
        if member is None:
            source = archive.layer_sources.get(diff_ids[i] if i < len(diff_ids) else "")
            if source is None:
                raise ArchiveError(f"layer {name} is neither in the archive nor a foreign layer")
            layers.append(source)
            continue
        digest = "sha256:" + name.removesuffix(".tar.gz")
        client.push_blob_chunks(digest, member.size, archive.chunks(name))
        layers.append({"mediaType": DOCKER_LAYER, "size": member.size, "digest": digest})
    manifest = marshal(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": layers,
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    client.put_manifest_bytes(digest, manifest, DOCKER_MANIFEST)
    return Published(digest, DOCKER_MANIFEST, len(manifest))
