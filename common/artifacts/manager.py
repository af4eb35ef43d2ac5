"""The artifacts manager: a Talos release's images, verified, then unpacked into the local store.

Every image is addressed as ``<artifacts.core.registry>/<namespace>/<component>``. Tag-based images
(imager, installer(-base), catalogs, talosctl-all) are resolved to a digest first, and everything
after that is done by that digest: the signature is checked for it, the platform manifest is
chosen from the verified index, and each blob is checked against its descriptor while it streams.
Catalog-based images (extensions, overlays) are pulled by the catalog's digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from common.artifacts.catalog import (
    ExtensionRef,
    ImageDependency,
    OverlayRef,
    TalosctlTuple,
    parse_extensions,
    parse_overlays,
    parse_talosctl,
)
from common.artifacts.shared_tags import NoTagMemory, TagMemory
from common.artifacts.store import ArtifactStore
from common.artifacts.unpack import UnpackError, UnpackLimits, UnpackStats, apply_layers
from common.config import Config
from common.config.options import RepositoryOptions
from common.cosign.source import SourceVerifier
from common.errors import BadSourceError, FactoryError, NotFoundError, UnavailableError
from common.registry.client import HostileSourceError, Manifest, ReadLimits, RegistryClient, RegistryError
from common.talos import version as v
from common.talos.quirks import Quirks

log = logging.getLogger(__name__)

ARCHES = ("amd64", "arm64")
# After a failed refresh, serve the last good list and try again after this long.
FAILED_REFRESH_RETRY = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class UnpackedImage:
    """A flattened image filesystem at ``fs``, with SELinux labels the layers carried."""

    digest: str  # the verified digest (index or manifest) the image was pulled by
    manifest_digest: str  # the platform manifest
    fs: Path
    labels: dict[str, str]
    config: dict[str, Any]
    size: int = 0  # bytes its layers unpacked to (tar streams); 0 for trees unpacked before this was kept
    entries: int = 0  # tar entries of its layers


@dataclass(frozen=True)
class ImageLayers:
    """An image kept as its original (compressed) layers, e.g. the installer base."""

    digest: str
    manifest: dict[str, Any]
    config: bytes
    layers: list[tuple[dict[str, Any], Path]]  # (descriptor, blob path)


class ArtifactsManager:
    def __init__(
        self,
        config: Config,
        store: ArtifactStore,
        verifier: SourceVerifier,
        clock: Callable[[], float] = time.monotonic,
        shared: TagMemory | None = None,
    ) -> None:
        self.core = config.artifacts.core
        self.shared: TagMemory = shared or NoTagMemory()  # the last good tag list, for every process
        self.limits = config.artifacts.limits
        self.read_limits = ReadLimits.from_options(config.artifacts.limits)
        self.components = config.artifacts.core.components
        self.minimum = v.parse_tolerant(config.build.minTalosVersion)
        self.broken = [v.parse_tolerant(b) for b in config.build.brokenTalosVersions]
        self.recheck = config.artifacts.talosVersionRecheckInterval.total_seconds()
        self.store = store
        self.verifier = verifier
        self.clock = clock
        self._clients: dict[str, RegistryClient] = {}
        self._versions: list[v.Version] | None = None
        self._versions_checked = 0.0
        self._versions_error: str | None = None
        self._versions_stale_since: float | None = None
        self._versions_lock = threading.Lock()
        self._catalogs: dict[tuple[str, str], tuple[float, Any]] = {}
        self._catalog_locks: dict[tuple[str, str], threading.Lock] = {}
        # Requests for already-unpacked images must not touch the registry: tags are re-resolved
        # once per recheck interval, and what a digest names never changes.
        self._tags: dict[tuple[str, str], tuple[float, str]] = {}
        self._pulled: dict[tuple[str, str, str], tuple[Manifest, bytes]] = {}
        self._guard = threading.Lock()
        self._local = threading.local()  # the build budget of the thread's build (build_budget)

    # --- registry plumbing -------------------------------------------------------------------

    def client(self, repository: str) -> RegistryClient:
        with self._guard:
            if repository not in self._clients:
                self._clients[repository] = RegistryClient(
                    RepositoryOptions(
                        registry=self.core.registry,
                        namespace=self.core.namespace,
                        repository=repository,
                        insecure=self.core.insecure,
                    ),
                    self.read_limits,
                )
            return self._clients[repository]

    def _resolve(self, repository: str, tag: str, missing: str | None = None) -> tuple[RegistryClient, str]:
        """The digest a tag points at; NotFoundError (``missing``, or a generic text) if there is none."""
        client = self.client(repository)
        with self._guard:
            hit = self._tags.get((repository, tag))
        if hit and hit[0] > self.clock():
            return client, hit[1]
        digest = client.resolve(tag)
        if digest is None:
            raise NotFoundError(missing or f"image {client.repo.reference}:{tag} does not exist")
        with self._guard:
            self._tags[(repository, tag)] = (self.clock() + max(self.recheck, 1.0), digest)
        return client, digest

    def _pull(self, client: RegistryClient, digest: str, arch: str) -> tuple[Manifest, bytes]:
        """Verifies ``digest``, then returns its ``linux/<arch>`` manifest and config (memoised)."""
        key = (client.repo.reference, digest, arch)
        with self._guard:
            hit = self._pulled.get(key)
        if hit:
            return hit
        self.verifier.verify(client, digest)
        manifest = self._platform_manifest(client, digest, arch)
        config = self._small_blob(client, manifest.document["config"], f"{client.repo.reference}@{digest}")
        with self._guard:
            if len(self._pulled) >= 4096:
                self._pulled.clear()
            self._pulled[key] = (manifest, config)
        return manifest, config

    def _platform_manifest(self, client: RegistryClient, digest: str, arch: str) -> Manifest:
        top = client.get_manifest(digest)
        if top is None:
            raise RegistryError(f"{client.repo.reference}@{digest} disappeared from the registry")
        if not top.is_index:
            return top
        for entry in top.document.get("manifests", []):
            platform = entry.get("platform") or {}
            if platform.get("os") == "linux" and platform.get("architecture") == arch:
                manifest = client.get_manifest(entry["digest"])
                if manifest is None:
                    raise RegistryError(f"{client.repo.reference}@{entry['digest']} is missing")
                return manifest
        raise NotFoundError(f"image {client.repo.reference}@{digest} has no linux/{arch} variant")

    # --- Talos versions ----------------------------------------------------------------------

    def talos_versions(self) -> list[v.Version]:
        """Offered versions; refreshed every recheck interval, stale (and logged) when that fails."""
        now = self.clock()
        cached = self._versions
        if cached is not None and now - self._versions_checked < self.recheck:
            return cached
        # One refresh at a time; others keep answering from the last good list meanwhile.
        if not self._versions_lock.acquire(blocking=cached is None):
            return cached or []
        try:
            if self._versions is not None and self.clock() - self._versions_checked < self.recheck:
                return self._versions
            return self._refresh_versions()
        finally:
            self._versions_lock.release()

    def _refresh_versions(self) -> list[v.Version]:
        client = self.client(self.components.imager)
        try:
            tags = client.list_tags()
            if not tags:
                raise UnavailableError(f"no Talos versions: {client.repo.reference} has no tags")
        except (UnavailableError, RegistryError) as exc:
            if self._versions is None:
                remembered = self.shared.load()  # another process's last good list
                if not remembered:
                    raise UnavailableError(f"failed to list Talos versions: {exc}") from exc
                self._versions = v.select_versions(remembered, self.minimum, self.broken)
            if self._versions_stale_since is None:
                self._versions_stale_since = time.time()
            self._versions_error = str(exc)
            self._versions_checked = self.clock() - self.recheck + FAILED_REFRESH_RETRY
            log.warning(
                "serving the last good Talos version list: refresh failed",
                extra={"error": str(exc), "stale_since": self._versions_stale_since},
            )
            return self._versions
        self._versions = v.select_versions(tags, self.minimum, self.broken)
        self.shared.save(tags)
        self._versions_checked = self.clock()
        self._versions_error = None
        self._versions_stale_since = None
        return self._versions

    def versions_note(self) -> str | None:
        """A line for /readyz when the version list is being served stale."""
        if self._versions_stale_since is None:
            return None
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._versions_stale_since))
        return f"talos versions: serving the list from before {since}; refresh failed: {self._versions_error}"

    def broken_versions(self) -> list[v.Version]:
        return list(self.broken)

    def require(self, version: v.Version) -> str:
        """The version's tag, or 404 ``version X is not available`` (upstream's text, no ``v``)."""
        if version not in self.talos_versions():
            raise NotFoundError(f"version {version} is not available")
        return v.tag(version)

    # --- catalogs ----------------------------------------------------------------------------

    def _cached(self, kind: str, tag: str, load: Callable[[], T]) -> T:
        key = (kind, tag)
        with self._guard:
            hit = self._catalogs.get(key)
            if hit and hit[0] > self.clock():
                return hit[1]
            lock = self._catalog_locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                hit = self._catalogs.get(key)
                if hit and hit[0] > self.clock():
                    return hit[1]
            value = load()
            with self._guard:
                self._catalogs[key] = (self.clock() + max(self.recheck, 1.0), value)
            return value

    def _read_files(self, repository: str, tag: str, names: set[str] | None) -> dict[str, bytes]:
        """Regular files at the root of a small tag-based image (catalogs, talosctl names)."""
        with self.image_by_tag(repository, tag, "amd64") as image:
            found: dict[str, bytes] = {}
            for path in image.fs.iterdir():
                if path.is_file() and not path.is_symlink() and (names is None or path.name in names):
                    found[path.name] = path.read_bytes() if names is not None else b""
            return found

    def official_extensions(self, version: v.Version) -> list[ExtensionRef]:
        tag = self.require(version)

        def load() -> list[ExtensionRef]:
            files = self._read_files(
                self.components.extensionManifest, tag, {"image-digests", "descriptions.yaml"}
            )
            return parse_extensions(
                files.get("image-digests"), files.get("descriptions.yaml"), self.core.registry
            )

        return self._cached("extensions", tag, load)

    def official_overlays(self, version: v.Version) -> list[OverlayRef]:
        tag = self.require(version)
        if not Quirks(str(version)).supports_overlay():
            return []

        def load() -> list[OverlayRef]:
            files = self._read_files(self.components.overlayManifest, tag, {"overlays.yaml"})
            return parse_overlays(files.get("overlays.yaml"))

        return self._cached("overlays", tag, load)

    def talosctl_tuples(self, version: v.Version) -> list[TalosctlTuple]:
        tag = self.require(version)
        if not Quirks(str(version)).supports_talosctl():
            return []

        def load() -> list[TalosctlTuple]:
            return parse_talosctl(sorted(self._read_files(self.components.talosctl, tag, None)))

        return self._cached("talosctl", tag, load)

    # --- images ------------------------------------------------------------------------------

    def installer_repository(self, version: v.Version) -> str:
        if Quirks(str(version)).supports_unified_installer():
            return self.components.installerBase
        return self.components.installer

    @contextmanager
    def image_by_tag(self, repository: str, tag: str, arch: str) -> Iterator[UnpackedImage]:
        client, digest = self._resolve(repository, tag)
        with self._unpacked(client, digest, arch) as image:
            yield image

    @contextmanager
    def image_by_digest(self, repository: str, digest: str, arch: str) -> Iterator[UnpackedImage]:
        """A catalog-based image (an extension or overlay): unpacked strictly (no device files, FIFOs
        or symlinks climbing out of the root; ``common/artifacts/unpack.py``)."""
        client = self.client(repository)
        with self._unpacked(client, digest, arch, strict=True) as image:
            budget: _BuildBudget | None = getattr(self._local, "budget", None)
            if budget is not None:
                budget.add(f"{client.repo.reference}@{digest}", image)
            yield image

    @contextmanager
    def build_budget(self) -> Iterator[None]:
        """Within the block, the extension and overlay images this thread opens (``image_by_digest``)
        count against ``artifacts.limits.maxBuildSize`` and ``maxBuildEntries``: the one that takes a
        build over either is refused (502) naming every image counted. Each image is already bounded
        on its own when it is unpacked; this bounds how many a schematic may stack up."""
        previous = getattr(self._local, "budget", None)
        self._local.budget = _BuildBudget(self.limits.maxBuildSize, self.limits.maxBuildEntries)
        try:
            yield
        finally:
            self._local.budget = previous

    def imager(self, version: v.Version) -> AbstractContextManager[UnpackedImage]:
        """The imager image (amd64 variant, which carries the boot payload of every arch)."""
        return self.image_by_tag(self.components.imager, self.require(version), "amd64")

    @contextmanager
    def talosctl(self, version: v.Version) -> Iterator[UnpackedImage]:
        # No talosctl-all image (Talos < 1.11) reads as an unavailable version, as upstream.
        missing = f"version {version} is not available"
        client, digest = self._resolve(self.components.talosctl, self.require(version), missing)
        with self._unpacked(client, digest, "amd64") as image:
            yield image

    def extension(self, ref: ExtensionRef, arch: str) -> AbstractContextManager[UnpackedImage]:
        return self.image_by_digest(ref.ref.repository, ref.digest, arch)

    def overlay(self, ref: OverlayRef, arch: str) -> AbstractContextManager[UnpackedImage]:
        return self.image_by_digest(ref.ref.repository, ref.digest, arch)

    def installer_dependency(self, version: v.Version, arch: str) -> ImageDependency:
        """The installer base a build of ``version`` for ``arch`` uses, pinned to its platform manifest.

        Upstream HEAD binds the installer profile's ``imageRef`` to this digest reference, so a moved
        tag gives a new cache key instead of a stale asset.
        """
        repository = self.installer_repository(version)
        missing = f"version {version} is not available"
        client, digest = self._resolve(repository, self.require(version), missing)
        manifest, _ = self._pull(client, digest, arch)
        return ImageDependency(
            repository=repository,
            digest=digest,
            manifest_digest=manifest.digest,
            reference=f"{client.repo.reference}@{manifest.digest}",
        )

    @contextmanager
    def installer_base(self, dependency: ImageDependency, arch: str) -> Iterator[ImageLayers]:
        """The installer base's manifest, config and compressed layer blobs, as pulled (by digest)."""
        client = self.client(dependency.repository)
        manifest, config = self._pull(client, dependency.digest, arch)
        if manifest.digest != dependency.manifest_digest:
            raise RegistryError(
                f"{client.repo.path}@{dependency.digest} now has linux/{arch} manifest {manifest.digest}, "
                f"not {dependency.manifest_digest}"
            )
        document = manifest.document
        with ExitStack() as stack:
            layers = [
                (descriptor, stack.enter_context(self._blob(client, descriptor, dependency.digest)))
                for descriptor in document["layers"]
            ]
            yield ImageLayers(digest=dependency.digest, manifest=document, config=config, layers=layers)

    # --- pulling and unpacking ---------------------------------------------------------------

    def _small_blob(self, client: RegistryClient, descriptor: dict[str, Any], image: str) -> bytes:
        digest = str(descriptor["digest"])
        data = client.get_blob(digest, 4 * 1024 * 1024)
        if data is None:
            raise BadSourceError(f"image {image}: the registry has no blob {digest} (its config)")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BadSourceError(
                f"image {image}: config {digest} does not match its digest (the registry sent {actual})"
            )
        return data

    @contextmanager
    def _blob(self, client: RegistryClient, descriptor: dict[str, Any], image_digest: str) -> Iterator[Path]:
        digest = str(descriptor["digest"])

        def build(dest: Path) -> None:
            image = f"{client.repo.reference}@{image_digest}"
            reader = _VerifyingReader(_stream(client, descriptor), digest, image)
            with open(dest / "blob", "wb") as out:
                while chunk := reader.read(1 << 20):
                    out.write(chunk)
            reader.finish()

        with self.store.entry("blob-" + digest.replace(":", "-"), build) as path:
            yield path / "blob"

    @contextmanager
    def _unpacked(
        self, client: RegistryClient, digest: str, arch: str, *, strict: bool = False
    ) -> Iterator[UnpackedImage]:
        manifest, config_bytes = self._pull(client, digest, arch)
        document = manifest.document
        config = json.loads(config_bytes)
        image = f"{client.repo.reference}@{digest}"
        limits = UnpackLimits.from_options(self.limits, strict=strict)

        def build(dest: Path) -> None:
            fs = dest / "fs"
            fs.mkdir()
            descriptors = list(document.get("layers", []))
            readers = [_VerifyingReader(_stream(client, d), str(d["digest"]), image) for d in descriptors]
            stats = UnpackStats()
            try:
                labels = apply_layers(_finishing(readers), fs, limits, stats)
            except UnpackError as exc:
                # A layer whose bytes are wrong usually breaks its gzip or tar stream before its end,
                # where the digest is checked: name the real cause, not the decompressor's complaint.
                _finish_started(readers)
                layer = descriptors[exc.layer]["digest"] if exc.layer is not None else "?"
                raise BadSourceError(f"image {image}: layer {layer}: {exc.message}") from exc
            except FactoryError:
                raise  # already named (a refused or unreadable blob): its stream is over, nothing to finish
            except Exception:
                _finish_started(readers)
                raise
            (dest / "labels.json").write_text(json.dumps(labels, sort_keys=True))
            (dest / "stats.json").write_text(json.dumps({"bytes": stats.bytes, "entries": stats.entries}))

        key = "tree-" + manifest.digest.replace(":", "-")
        try:
            with self.store.entry(key, build) as path:
                labels = json.loads((path / "labels.json").read_text())
                stats_file = path / "stats.json"
                counted = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
                yield UnpackedImage(
                    digest,
                    manifest.digest,
                    path / "fs",
                    labels,
                    config,
                    size=int(counted.get("bytes", 0)),
                    entries=int(counted.get("entries", 0)),
                )
        except OSError as exc:
            raise FactoryError(f"unpacking {image} failed: {exc}") from exc


class _BuildBudget:
    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.bytes = self.entries = 0
        self.images: list[str] = []

    def add(self, name: str, image: UnpackedImage) -> None:
        self.images.append(name)
        self.bytes += image.size
        self.entries += image.entries
        if self.bytes > self.max_bytes:
            raise BadSourceError(
                f"the extension and overlay images of this build ({', '.join(self.images)}) unpack to "
                f"{self.bytes} bytes, more than {self.max_bytes} (artifacts.limits.maxBuildSize): refused"
            )
        if self.entries > self.max_entries:
            raise BadSourceError(
                f"the extension and overlay images of this build ({', '.join(self.images)}) hold "
                f"{self.entries} entries, more than {self.max_entries} (artifacts.limits.maxBuildEntries): "
                "refused"
            )


class _VerifyingReader:
    """A file-like view of a blob stream (a layer of ``image``) that refuses content not matching its
    digest: :meth:`finish` raises :class:`BadSourceError` (502) naming the image, the layer and why."""

    def __init__(self, chunks: Iterator[bytes], digest: str, image: str) -> None:
        self.chunks = chunks
        self.digest = digest
        self.image = image
        self.hash = hashlib.sha256()
        self.chunk = b""
        self.offset = 0
        self.started = False
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        self.started = True
        if self.offset >= len(self.chunk):
            self.chunk, self.offset = b"", 0
            try:
                for chunk in self.chunks:
                    if chunk:
                        self.hash.update(chunk)
                        self.chunk = chunk
                        break
            except HostileSourceError as exc:
                raise BadSourceError(f"image {self.image}: {exc.message}") from exc
        end = len(self.chunk) if size < 0 else min(len(self.chunk), self.offset + size)
        data = self.chunk[self.offset : end]
        self.offset = end
        return data

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        self.checked = True
        actual = "sha256:" + self.hash.hexdigest()
        if actual != self.digest:
            raise BadSourceError(
                f"image {self.image}: layer {self.digest} does not match its digest "
                f"(the registry sent content hashing to {actual})"
            )


def _stream(client: RegistryClient, descriptor: dict[str, Any]) -> Iterator[bytes]:
    """A layer's bytes, refused as soon as the registry sends more than its descriptor's size."""
    size = descriptor.get("size")
    return client.stream_blob(str(descriptor["digest"]), size=size if isinstance(size, int) else None)


def _finish_started(readers: list[_VerifyingReader]) -> None:
    for reader in readers:
        if reader.started and not reader.checked:
            reader.finish()


def _finishing(readers: list[_VerifyingReader]) -> Iterator[IO[bytes]]:
    for reader in readers:
        yield reader  # type: ignore[misc]
        reader.finish()
