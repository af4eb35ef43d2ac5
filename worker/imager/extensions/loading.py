"""Where extensions come from and ``extensions.Load``: layout, manifest and Talos compatibility.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/extensions/load.go`` and ``validate.go``.
Sources are never modified: they are shared, read-only caches of unpacked extension images.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from common.artifacts.unpack import apply_layers
from worker.imager.extensions.manifest import (
    MANIFEST,
    MANIFEST_VERSION,
    MAX_MANIFEST_SIZE,
    ROOTFS,
    ExtensionError,
    Metadata,
    parse_manifest,
)
from worker.imager.extensions.ranges import RangeError, parse_range, talos_core_version, trim_v

__all__ = ["Extension", "ExtensionSource", "check_compatibility", "load", "load_all"]


@dataclass(frozen=True)
class ExtensionSource:
    """A flattened extension image (``manifest.yaml`` + ``rootfs/``), never modified.

    ``labels`` and ``modes`` are keyed like :func:`common.artifacts.unpack.apply_layers`'s result
    (``rootfs/usr/...`` relative to ``root``); ``modes`` gives exact permission bits where the tree on
    disk cannot hold them (rootless unpacking gives files u+rw).
    """

    root: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    modes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_tarball(cls, tarball: Path, dest: Path, name: str) -> ExtensionSource:
        """Unpacks a virtual extension tar into ``dest``, keeping its SELinux labels and exact modes."""
        dest.mkdir(parents=True, exist_ok=True)
        with open(tarball, "rb") as stream:
            labels = apply_layers([stream], dest)
        modes: dict[str, int] = {}
        with tarfile.open(tarball, mode="r:*") as archive:
            for member in archive:
                rel = "/".join(p for p in PurePosixPath(member.name.lstrip("/")).parts if p != ".")
                if not rel or not member.isreg():
                    continue
                path = dest / rel
                if (
                    path.is_file()
                    and not path.is_symlink()
                    and (path.stat().st_mode & 0o7777) != (member.mode & 0o7777)
                ):
                    modes[rel] = member.mode & 0o7777
        return cls(root=dest, labels=labels, name=name, modes=modes)

    @property
    def display(self) -> str:
        return self.name or str(self.root)


@dataclass(frozen=True)
class Extension:
    """A loaded extension; ``directory`` is its name in the tree (``0``, ``1``…), the squashfs' stem."""

    source: ExtensionSource
    directory: str
    metadata: Metadata

    @property
    def rootfs(self) -> Path:
        return self.source.root / ROOTFS

    @property
    def name(self) -> str:
        return self.source.display


def load(source: ExtensionSource, directory: str) -> Extension:
    """``extensions.Load``: exactly ``manifest.yaml`` and ``rootfs/``, manifest version ``v1alpha1``."""

    def fail(message: str) -> ExtensionError:
        return ExtensionError(f'extension "{source.display}": {message}')

    try:
        items = sorted(os.listdir(source.root), key=os.fsencode)
    except OSError as exc:
        raise fail(f"cannot read the image: {exc.strerror}") from exc
    metadata: Metadata | None = None
    has_rootfs = False
    for item in items:
        path = source.root / item
        if item == MANIFEST:
            if not path.is_file() or path.is_symlink():
                raise fail("manifest.yaml is not a regular file")
            try:
                if path.stat().st_size > MAX_MANIFEST_SIZE:
                    raise fail(f"manifest.yaml is larger than {MAX_MANIFEST_SIZE} bytes")
                version, metadata = parse_manifest(path.read_bytes())
            except ExtensionError as exc:
                raise fail(exc.message) from exc
            if version != MANIFEST_VERSION:
                raise fail(f'unsupported manifest version: "{version}"')
        elif item == ROOTFS:
            if not path.is_dir() or path.is_symlink():
                raise fail("rootfs is not a directory")
            has_rootfs = True
        else:
            raise fail(f'unexpected file "{item}"')
    if metadata is None:
        raise fail("extension manifest is missing")
    if not has_rootfs:
        raise fail("extension rootfs is missing")
    return Extension(source=source, directory=directory, metadata=metadata)


def check_compatibility(ext: Extension, version: str) -> None:
    """The manifest's Talos constraint against the target's core version (empty: any version)."""
    constraint = ext.metadata.compatibility
    if not constraint:
        return
    try:
        matches = parse_range(trim_v(constraint))
    except RangeError as exc:
        raise ExtensionError(
            f'extension "{ext.name}": error parsing Talos version constraint {constraint!r}: {exc}'
        ) from exc
    if not matches(talos_core_version(version)):
        raise ExtensionError(
            f'extension "{ext.name}" is not compatible with Talos version {version}: '
            f"version constraint {constraint} can't be satisfied"
        )


def load_all(sources: Sequence[ExtensionSource], version: str) -> list[Extension]:
    """Loads then validates every extension in upstream's processing order.

    Upstream unpacks extension *i* into directory ``str(i)`` and lists the directories sorted as
    strings, so from 11 extensions on the order is 0, 1, 10, 11, …, 2, 3, ….
    """
    ordered = sorted(((str(i), src) for i, src in enumerate(sources)), key=lambda item: item[0])
    loaded = [load(src, directory) for directory, src in ordered]
    for ext in loaded:
        check_compatibility(ext, version)
    return loaded
