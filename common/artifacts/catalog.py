"""The per-version catalogs a Talos release publishes, parsed as upstream parses them.

* ``siderolabs/extensions:<v>`` carries ``image-digests`` (``<tagged ref>@<digest>`` per line) and
  an optional ``descriptions.yaml`` keyed by the whole line;
* ``siderolabs/overlays:<v>`` carries ``overlays.yaml`` (``overlays: [{name, image, digest}]``);
* ``siderolabs/talosctl-all:<v>`` carries ``talosctl-<os>-<arch>[.exe]`` files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from common.errors import FactoryError

DEFAULT_REGISTRY = "index.docker.io"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class CatalogError(FactoryError):
    """A release catalog is malformed (a 500: the release, not the client, is at fault)."""


@dataclass(frozen=True)
class TaggedRef:
    """go-containerregistry's ``name.Tag``: registry, repository path and tag."""

    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse_tagged(text: str) -> TaggedRef:
    name, tag = text, "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = text.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = "library/" + repository
    if not REPOSITORY.match(repository) or not TAG.match(tag):
        raise CatalogError(f"failed to parse tagged reference {text}")
    return TaggedRef(registry, repository, tag)


@dataclass(frozen=True)
class ExtensionRef:
    ref: TaggedRef  # identity, shown to clients (core registry host, as upstream HEAD)
    digest: str
    author: str = ""
    description: str = ""

    @property
    def name(self) -> str:
        return self.ref.repository


@dataclass(frozen=True)
class OverlayRef:
    name: str
    ref: TaggedRef  # as written in the catalog
    digest: str


@dataclass(frozen=True)
class ImageDependency:
    """An image pinned for a build: pulled (and signature-checked) by ``digest``, one arch's manifest."""

    repository: str  # repository path under the core registry, e.g. siderolabs/installer-base
    digest: str  # what the tag resolved to (the signed index)
    manifest_digest: str  # the linux/<arch> manifest inside it
    reference: str  # <registry>/<path>@<manifest_digest>, as upstream's name.Digest prints it


@dataclass(frozen=True)
class TalosctlTuple:
    os: str
    arch: str
    ext: str

    @property
    def filename(self) -> str:
        return f"talosctl-{self.os}-{self.arch}{self.ext}"


def parse_extensions(
    image_digests: bytes | None, descriptions: bytes | None, core_registry: str
) -> list[ExtensionRef]:
    if image_digests is None:
        raise CatalogError("failed to find image-digests file")
    described: dict[str, Any] = {}
    if descriptions is not None:
        try:
            loaded = yaml.safe_load(descriptions)
        except yaml.YAMLError as exc:
            raise CatalogError(f"error reading descriptions.yaml file: {exc}") from exc
        described = loaded if isinstance(loaded, dict) else {}
    extensions = []
    for raw in image_digests.decode(errors="replace").splitlines():
        line = raw.strip()
        tagged, sep, digest = line.partition("@")
        if not sep:
            continue
        ref = parse_tagged(tagged)
        if not DIGEST.match(digest):
            raise CatalogError(f"invalid digest {digest!r} for {tagged} in image-digests")
        info = described.get(line) or {}
        extensions.append(
            ExtensionRef(
                ref=TaggedRef(core_registry, ref.repository, ref.tag),
                digest=digest,
                author=str(info.get("author") or "") if isinstance(info, dict) else "",
                description=str(info.get("description") or "") if isinstance(info, dict) else "",
            )
        )
    return extensions


def parse_overlays(overlays_yaml: bytes | None) -> list[OverlayRef]:
    if overlays_yaml is None:
        raise CatalogError("failed to find overlays.yaml file")
    try:
        document = yaml.safe_load(overlays_yaml) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"error reading overlays.yaml file: {exc}") from exc
    overlays = []
    for item in document.get("overlays") or [] if isinstance(document, dict) else []:
        if not isinstance(item, dict):
            raise CatalogError("error reading overlays.yaml file: an overlay is not a mapping")
        digest = str(item.get("digest") or "")
        if not DIGEST.match(digest):
            raise CatalogError(f"invalid digest {digest!r} for overlay {item.get('name')!r}")
        overlays.append(
            OverlayRef(str(item.get("name") or ""), parse_tagged(str(item.get("image") or "")), digest)
        )
    return overlays


def parse_talosctl(names: list[str]) -> list[TalosctlTuple]:
    tuples = []
    for name in names:
        if not name.startswith("talosctl-"):
            continue
        rest = name.removeprefix("talosctl-")
        ext = ".exe" if rest.endswith(".exe") else ""
        parts = rest.removesuffix(".exe").split("-")
        if len(parts) != 2:
            raise CatalogError(f"invalid talosctl file name {name}")
        tuples.append(TalosctlTuple(parts[0], parts[1], ext))
    if not tuples:
        raise CatalogError("failed to find talosctl binaries")
    return tuples
