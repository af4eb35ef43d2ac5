"""Which images a factory needs for a Talos version, read the way the factory itself reads them.

Upstream's air-gap question (siderolabs/image-factory#310, siderolabs/talos#11927): the imager, the
installer base (``installer`` before Talos 1.10), the extension and overlay catalogs and every image
they list (pinned by digest in the catalog), and ``talosctl-all`` (from Talos 1.11). Tag-based images
are resolved to a digest once, so what is verified is what is copied; catalogs are read through the
factory's own :class:`~common.artifacts.manager.ArtifactsManager`, which verifies their signatures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from common.artifacts.manager import ArtifactsManager
from common.cosign.types import SignatureError
from common.errors import FactoryError
from common.talos import version as v
from common.talos.quirks import Quirks


@dataclass
class NeededImage:
    """One image to copy: ``repository`` is relative to ``artifacts.core.namespace``."""

    repository: str
    digest: str
    tags: list[str] = field(default_factory=list)  # tags to set on the mirror (may be empty)
    why: list[str] = field(default_factory=list)  # "imager v1.12.4", "extension of v1.12.4", …

    def reference(self, prefix: str) -> str:
        """``<prefix>/<repository>[:<first tag>]@<digest>`` (``prefix``: registry plus namespace)."""
        tag = f":{self.tags[0]}" if self.tags else ""
        return f"{prefix}/{self.repository}{tag}@{self.digest}"


@dataclass
class Needs:
    """Images to copy (deduplicated by repository and digest) and catalogs that could not be read."""

    images: list[NeededImage] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "<reference>: <reason>"

    def add(self, repository: str, digest: str, tag: str | None, why: str) -> None:
        for image in self.images:
            if image.repository == repository and image.digest == digest:
                break
        else:
            image = NeededImage(repository, digest)
            self.images.append(image)
        if tag and tag not in image.tags:
            image.tags.append(tag)
        image.why.append(why)


def needed_images(manager: ArtifactsManager, versions: Iterable[v.Version]) -> Needs:
    """Every image the factory pulls for ``versions``; a catalog that fails verification is refused."""
    needs = Needs()
    components = manager.components
    for version in versions:
        tag = v.tag(version)
        quirks = Quirks(str(version))
        tagged = [
            (components.imager, "imager"),
            (manager.installer_repository(version), "installer base"),
            (components.extensionManifest, "extensions catalog"),
        ]
        if quirks.supports_overlay():
            tagged.append((components.overlayManifest, "overlays catalog"))
        if quirks.supports_talosctl():
            tagged.append((components.talosctl, "talosctl"))
        for repository, what in tagged:
            client = manager.client(repository)
            digest = client.resolve(tag)
            if digest is None:
                if what == "overlays catalog":  # optional in upstream's releases too
                    continue
                raise FactoryError(f"{what} {client.repo.reference}:{tag} does not exist")
            needs.add(repository, digest, tag, f"{what} {tag}")
        try:
            for extension in manager.official_extensions(version):
                needs.add(
                    extension.ref.repository, extension.digest, extension.ref.tag, f"extension of {tag}"
                )
        except SignatureError as exc:
            needs.refused.append(f"extensions catalog {tag}: {exc.message}")
        if quirks.supports_overlay():
            try:
                for overlay in manager.official_overlays(version):
                    needs.add(overlay.ref.repository, overlay.digest, overlay.ref.tag, f"overlay of {tag}")
            except SignatureError as exc:
                needs.refused.append(f"overlays catalog {tag}: {exc.message}")
    return needs
